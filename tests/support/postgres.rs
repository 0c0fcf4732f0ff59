//! A real PostgreSQL server for the SQL provider's tests: `initdb` + `pg_ctl` in a
//! temp dir on a free loopback port, one per test binary, stopped at exit.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

pub struct Postgres {
    pub port: u16,
    pub admin_password: String,
    dir: PathBuf,
    bin: PathBuf,
}

static PG: OnceLock<Postgres> = OnceLock::new();

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run hack/deps.sh (make test does)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin")
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (initdb refuses root).
fn run_as_owner(cmd: &mut Command) -> std::process::Output {
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut wrapped = if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        c
    } else {
        let mut c = Command::new(cmd.get_program());
        c.args(cmd.get_args());
        c
    };
    wrapped.output().expect("running a PostgreSQL tool")
}

extern "C" fn stop_at_exit() {
    if let Some(pg) = PG.get() {
        let _ = run_as_owner(
            Command::new(pg.bin.join("pg_ctl"))
                .args(["stop", "-m", "immediate", "-D"])
                .arg(pg.dir.join("data")),
        );
        let _ = std::fs::remove_dir_all(&pg.dir);
    }
}

pub fn postgres() -> &'static Postgres {
    PG.get_or_init(|| {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "rotor-pg-{}-{}",
            std::process::id(),
            super::free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let admin_password = format!("pgadmin{}", super::free_port());
        std::fs::write(dir.join("pw"), &admin_password).unwrap();
        if unsafe { libc::geteuid() } == 0 {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let out = run_as_owner(
            Command::new(bin.join("initdb"))
                .args(["-U", "postgres", "--auth=scram-sha-256", "--pwfile"])
                .arg(dir.join("pw"))
                .arg("-D")
                .arg(dir.join("data")),
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = super::free_port();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
            dir.display()
        );
        let out = run_as_owner(
            Command::new(bin.join("pg_ctl"))
                .args(["start", "-w", "-t", "60", "-o", &opts, "-l"])
                .arg(dir.join("log"))
                .arg("-D")
                .arg(dir.join("data")),
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        unsafe {
            libc::atexit(stop_at_exit);
        }
        Postgres {
            port,
            admin_password,
            dir,
            bin,
        }
    })
}

impl Postgres {
    /// Whether `user` can log in with `password` (and run SELECT 1).
    pub async fn can_login(&self, user: &str, password: &str, database: &str) -> bool {
        let conn = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(database)
            .connect(tokio_postgres::NoTls)
            .await;
        match conn {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client.simple_query("SELECT 1").await.is_ok()
            }
            Err(_) => false,
        }
    }

    /// Runs SQL as the admin.
    pub async fn admin_sql(&self, sql: &str) {
        let (client, connection) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .password(&self.admin_password)
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
    }
}
