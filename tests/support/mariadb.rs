//! A real MariaDB server for the mysql provider's tests: `mariadb-install-db` +
//! `mariadbd` in a temp dir on a free loopback port, one per test binary, killed at
//! exit (and with the test binary, through the spawner's PR_SET_PDEATHSIG).
//!
//! It speaks TLS with a certificate for `127.0.0.1` signed by a CA made here with
//! `openssl`; plain connections keep working. Every statement it receives is written
//! to its general log ([`MariaDb::general_log`]), so a test can prove what never
//! reached the server. `rotor_admin` is the admin the README describes, with exactly the
//! privileges listed there; root is reachable only through the Unix socket.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct MariaDb {
    pub port: u16,
    /// `rotor_admin`'s password.
    pub admin_password: String,
    /// The CA (PEM) that signed the server's certificate.
    pub ca_pem: String,
    /// Another CA (PEM), which signed nothing this server presents.
    pub other_ca_pem: String,
    pub dir: PathBuf,
    pid: u32,
}

static DB: OnceLock<MariaDb> = OnceLock::new();

extern "C" fn stop_at_exit() {
    if let Some(db) = DB.get() {
        super::kill(db.pid);
        let _ = std::fs::remove_dir_all(&db.dir);
    }
}

/// Runs SQL as root over the Unix socket (the `mariadb` client); its stdout.
fn root_sql_at(dir: &Path, sql: &str) -> Result<String, String> {
    let out = Command::new("mariadb")
        .args(["--no-defaults", "-uroot", "--batch", "--skip-column-names"])
        .arg(format!("--socket={}", dir.join("sock").display()))
        .args(["-e", sql])
        .stdin(Stdio::null())
        .output()
        .expect("running the mariadb client");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

pub fn mariadb() -> &'static MariaDb {
    DB.get_or_init(|| {
        assert!(
            Path::new("/usr/sbin/mariadbd").exists(),
            "MariaDB is not installed: run hack/deps.sh (make test does)"
        );
        let dir = std::env::temp_dir().join(format!(
            "rotor-mariadb-{}-{}",
            std::process::id(),
            super::free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let tls = dir.join("tls");
        super::postgres::make_certificates(&tls);
        let is_root = unsafe { libc::geteuid() } == 0;
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(is_root.then_some("--user=root"))
            .stdin(Stdio::null());
        let out = install.output().expect("running mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = super::free_port();
        let mut server = Command::new("/usr/sbin/mariadbd");
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .arg("--general-log=1")
            .arg(format!(
                "--general-log-file={}",
                dir.join("general.log").display()
            ))
            .arg("--skip-name-resolve")
            .arg("--innodb-flush-log-at-trx-commit=0")
            .arg(format!("--ssl-cert={}", tls.join("server.crt").display()))
            .arg(format!("--ssl-key={}", tls.join("server.key").display()))
            .arg(format!("--ssl-ca={}", tls.join("ca.crt").display()))
            .args(is_root.then_some("--user=root"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let pid = super::spawn(server);
        unsafe {
            libc::atexit(stop_at_exit);
        }
        // Ready when root gets an answer over the socket (bounded).
        let deadline = Instant::now() + Duration::from_secs(60);
        while root_sql_at(&dir, "SELECT 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "mariadbd not ready within 60s: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let admin_password = format!("myadmin{}", super::free_port());
        // root only over the socket; rotor_admin with the README's privileges.
        root_sql_at(
            &dir,
            &format!(
                "DELETE FROM mysql.global_priv WHERE User = 'root' AND Host <> 'localhost';
                 FLUSH PRIVILEGES;
                 CREATE USER rotor_admin@'%' IDENTIFIED BY '{admin_password}';
                 GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO rotor_admin@'%';
                 GRANT SELECT ON mysql.user TO rotor_admin@'%';"
            ),
        )
        .unwrap();
        MariaDb {
            port,
            admin_password,
            ca_pem: std::fs::read_to_string(tls.join("ca.crt")).unwrap(),
            other_ca_pem: std::fs::read_to_string(tls.join("other-ca.crt")).unwrap(),
            dir,
            pid,
        }
    })
}

impl MariaDb {
    /// Runs SQL as root (Unix socket); panics on an error.
    pub fn root_sql(&self, sql: &str) -> String {
        root_sql_at(&self.dir, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Every statement the server received so far.
    pub fn general_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("general.log")).unwrap_or_default()
    }

    /// A plain (no TLS) connection as `user` over TCP.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<mysql_async::Conn, mysql_async::Error> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .prefer_socket(false)
            .user(Some(user))
            .pass(Some(password))
            .db_name(Some(database));
        mysql_async::Conn::new(opts).await
    }

    /// Whether `user` can log in with `password` (and run SELECT 1). `false` only when
    /// the server refuses the login (access denied, account locked): any other
    /// failure fails the test, so "cannot log in" is never "could not ask".
    pub async fn can_login(&self, user: &str, password: &str, database: &str) -> bool {
        use mysql_async::prelude::Queryable;
        match self.connect(user, password, database).await {
            Ok(mut conn) => {
                conn.query_drop("SELECT 1").await.unwrap();
                let _ = conn.disconnect().await;
                true
            }
            Err(mysql_async::Error::Server(e)) if e.code == 1045 || e.code == 4151 => false,
            Err(e) => panic!("logging in as {user:?} failed, not with a refused login: {e}"),
        }
    }

    /// A session as `user`, kept open by the caller. Panics when the login fails.
    pub async fn session(&self, user: &str, password: &str, database: &str) -> mysql_async::Conn {
        self.connect(user, password, database)
            .await
            .unwrap_or_else(|e| panic!("logging in as {user:?}: {e}"))
    }

    /// The `Host` parts of accounts named exactly `user`, sorted.
    pub fn hosts_of(&self, user: &str) -> Vec<String> {
        let out = self.root_sql(&format!(
            "SELECT Host FROM mysql.user WHERE User = {} ORDER BY 1",
            hex_literal(user)
        ));
        out.lines().map(str::to_string).collect()
    }
}

/// `value` as a hex literal (no quoting rules to get wrong in test SQL).
pub fn hex_literal(value: &str) -> String {
    if value.is_empty() {
        return "''".into();
    }
    let hex: String = value.bytes().map(|b| format!("{b:02X}")).collect();
    format!("0x{hex}")
}
