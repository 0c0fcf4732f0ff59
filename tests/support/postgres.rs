//! A real PostgreSQL server for the SQL provider's tests: `initdb` + `pg_ctl` in a
//! temp dir on a free loopback port, one per test binary, stopped at exit.
//!
//! It also speaks TLS (`ssl=on`) with a certificate for `127.0.0.1` signed by a CA made
//! here with `openssl`; plain connections keep working, so tests that use
//! `sslMode: disable` see the server they always did. The role `cleartext_admin` (when a
//! test creates it) must log in with the `password` method: the server asks for the
//! password in the clear, as a man in the middle would. Connections are logged
//! (`log_connections`), and [`Postgres::log`] reads the log.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Postgres {
    pub port: u16,
    pub admin_password: String,
    /// The CA (PEM) that signed the server's certificate.
    pub ca_pem: String,
    /// Another CA (PEM), which signed nothing this server presents.
    pub other_ca_pem: String,
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
        let tls = dir.join("tls");
        make_certificates(&tls);
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
        // First match wins: one role must send its password in the clear over TLS;
        // everyone else uses SCRAM, with or without TLS.
        std::fs::write(
            dir.join("data/pg_hba.conf"),
            "local all all scram-sha-256\n\
             hostssl all cleartext_admin 127.0.0.1/32 password\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        let port = super::free_port();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c ssl=on \
             -c ssl_cert_file={} -c ssl_key_file={} -c log_connections=on",
            dir.display(),
            tls.join("server.crt").display(),
            tls.join("server.key").display(),
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
            ca_pem: std::fs::read_to_string(tls.join("ca.crt")).unwrap(),
            other_ca_pem: std::fs::read_to_string(tls.join("other-ca.crt")).unwrap(),
            dir,
            bin,
        }
    })
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 signed by it (ECDSA P-256 with SHA-256,
/// which both sides can bind a SCRAM login to), and an unrelated second CA.
pub fn make_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-sha256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=rotor test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-sha256",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    // PostgreSQL refuses a key others can read.
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

impl Postgres {
    /// Whether `user` can log in with `password` (and run SELECT 1), over a plain
    /// connection. `false` only when the server refuses the password (SQLSTATE 28P01):
    /// any other failure (server down, no such database) fails the test, so "cannot
    /// log in" is never "could not ask".
    pub async fn can_login(&self, user: &str, password: &str, database: &str) -> bool {
        match self.connect(user, password, database).await {
            Ok(client) => {
                client.simple_query("SELECT 1").await.unwrap();
                true
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD) => false,
            Err(e) => panic!("logging in as {user:?} failed, not with a refused password: {e}"),
        }
    }

    /// A plain connection as `user`, its connection task spawned.
    async fn connect(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(database)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// The server's log so far (connections are logged).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Runs SQL as the admin.
    pub async fn admin_sql(&self, sql: &str) {
        let client = self.admin_session("postgres").await;
        client.batch_execute(sql).await.unwrap();
    }
}

impl Postgres {
    /// A session as `user` on `database` (plain connection), kept open by the caller.
    /// Panics when the login fails: the caller asserts it can log in.
    pub async fn session(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> tokio_postgres::Client {
        self.connect(user, password, database)
            .await
            .unwrap_or_else(|e| panic!("logging in as {user:?}: {e}"))
    }

    /// A session as the admin on `database`.
    pub async fn admin_session(&self, database: &str) -> tokio_postgres::Client {
        self.session("postgres", &self.admin_password, database)
            .await
    }

    /// The roles `user` is a member of (pg_auth_members), sorted.
    pub async fn roles_of(&self, user: &str) -> Vec<String> {
        let admin = self.admin_session("postgres").await;
        let rows = admin
            .query(
                "SELECT r.rolname FROM pg_catalog.pg_auth_members m \
                 JOIN pg_catalog.pg_roles r ON r.oid = m.roleid \
                 JOIN pg_catalog.pg_roles u ON u.oid = m.member \
                 WHERE u.rolname = $1 ORDER BY 1",
                &[&user],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// Which of `names` exist as roles, sorted.
    pub async fn existing_roles(&self, names: &[&str]) -> Vec<String> {
        let admin = self.admin_session("postgres").await;
        let rows = admin
            .query(
                "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY($1) ORDER BY 1",
                &[&names],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }
}
