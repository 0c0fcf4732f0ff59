//! Real `redis-server`s for the Redis provider's tests: each test starts its own, in a
//! temp dir on a free loopback port (they start in milliseconds, and a test may
//! restart its server), killed when dropped or when the test binary exits.
//!
//! Every server has an admin user `rotor` with exactly the ACL rules the README says
//! the admin needs, and `default` as the superuser the test itself uses. With
//! `acl_file`, users live in `<dir>/users.acl` (`--aclfile`); without, they are set at
//! start with `ACL SETUSER`. With `tls`, it also listens with TLS on `tls_port`, its
//! certificate for 127.0.0.1 signed by a CA made with `openssl`. Slow log on for every
//! command (`slowlog-log-slower-than 0`), so a test can read what reached the server.

use redis::Value;
use redis::aio::MultiplexedConnection;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// The ACL rules of the admin user rotor logs in as (the README's least privilege).
pub const ADMIN_RULES: &[&str] = &[
    "-@all",
    "+acl|setuser",
    "+acl|getuser",
    "+acl|users",
    "+acl|save",
    "+client|list",
    "+client|kill",
    "+client|id",
    "+config|get",
];

pub struct Redis {
    pub port: u16,
    /// The TLS port (0 without TLS).
    pub tls_port: u16,
    pub admin_user: &'static str,
    pub admin_password: String,
    /// The superuser's (`default`) password.
    pub root_password: String,
    pub ca_pem: String,
    pub other_ca_pem: String,
    pub dir: PathBuf,
    pid: Mutex<u32>,
    args: Vec<String>,
}

impl Redis {
    pub fn start(acl_file: bool, tls: bool) -> Redis {
        let dir = std::env::temp_dir().join(format!(
            "rotor-redis-{}-{}",
            std::process::id(),
            super::free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = super::free_port();
        let admin_password = format!("redisadmin{}", super::free_port());
        let root_password = format!("redisroot{}", super::free_port());
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            dir.to_str().unwrap(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--slowlog-log-slower-than",
            "0",
            "--slowlog-max-len",
            "10000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if acl_file {
            let acl = dir.join("users.acl");
            std::fs::write(
                &acl,
                format!(
                    "user default on >{root_password} ~* &* +@all\nuser rotor on >{admin_password} {}\n",
                    ADMIN_RULES.join(" ")
                ),
            )
            .unwrap();
            args.extend(["--aclfile".to_string(), acl.to_str().unwrap().to_string()]);
        } else {
            args.extend(["--requirepass".to_string(), root_password.clone()]);
        }
        let (mut tls_port, mut ca_pem, mut other_ca_pem) = (0, String::new(), String::new());
        if tls {
            let certs = dir.join("tls");
            super::postgres::make_certificates(&certs);
            tls_port = super::free_port();
            for (flag, file) in [
                ("--tls-cert-file", "server.crt"),
                ("--tls-key-file", "server.key"),
                ("--tls-ca-cert-file", "ca.crt"),
            ] {
                args.extend([
                    flag.to_string(),
                    certs.join(file).to_str().unwrap().to_string(),
                ]);
            }
            args.extend([
                "--tls-port".to_string(),
                tls_port.to_string(),
                "--tls-auth-clients".to_string(),
                "no".to_string(),
            ]);
            ca_pem = std::fs::read_to_string(certs.join("ca.crt")).unwrap();
            other_ca_pem = std::fs::read_to_string(certs.join("other-ca.crt")).unwrap();
        }
        let redis = Redis {
            port,
            tls_port,
            admin_user: "rotor",
            admin_password,
            root_password,
            ca_pem,
            other_ca_pem,
            dir,
            pid: Mutex::new(0),
            args,
        };
        redis.launch();
        if !acl_file {
            let mut setuser = vec!["ACL", "SETUSER", "rotor", "on"];
            let pw = format!(">{}", redis.admin_password);
            setuser.push(&pw);
            setuser.extend_from_slice(ADMIN_RULES);
            redis.cli(&setuser);
        }
        redis
    }

    fn launch(&self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.dir.join("log")).unwrap())
            .stderr(Stdio::null());
        *self.pid.lock().unwrap() = super::spawn(cmd);
        // Up once it answers (bounded: 30 s).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let out = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "--no-auth-warning", "PING"])
                .output()
                .expect("redis-cli");
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("PONG") || text.contains("NOAUTH") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start: {}",
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGKILLs the server and starts it again with the same files: whatever was not
    /// saved is gone.
    pub fn restart(&self) {
        let pid = *self.pid.lock().unwrap();
        super::kill(pid);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server survived SIGKILL"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.launch();
    }

    /// Runs `redis-cli` as the superuser; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &self.port.to_string(),
                "--no-auth-warning",
                "--user",
                "default",
            ])
            .args(["--pass", &self.root_password])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A plain connection, nobody logged in.
    pub async fn raw(&self) -> MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// A connection logged in as `user` with `password`, or the server's error code
    /// (`WRONGPASS`). Any other failure fails the test: "cannot log in" is never
    /// "could not ask".
    pub async fn login(&self, user: &str, password: &str) -> Result<MultiplexedConnection, String> {
        let mut conn = self.raw().await;
        match redis::cmd("AUTH")
            .arg(user)
            .arg(password)
            .query_async::<Value>(&mut conn)
            .await
        {
            Ok(_) => Ok(conn),
            Err(e) if e.code() == Some("WRONGPASS") => Err("WRONGPASS".into()),
            Err(e) => panic!("logging in as {user:?} failed, not with WRONGPASS: {e}"),
        }
    }

    /// Whether `user` logs in with `password` (and PING answers, or is not allowed).
    pub async fn can_login(&self, user: &str, password: &str) -> bool {
        match self.login(user, password).await {
            Ok(mut conn) => {
                // Logged in; a user whose rules leave PING out gets NOPERM for it.
                match redis::cmd("PING").query_async::<String>(&mut conn).await {
                    Ok(pong) => assert_eq!(pong, "PONG"),
                    Err(e) => assert_eq!(e.code(), Some("NOPERM"), "PING: {e}"),
                }
                true
            }
            Err(_) => false,
        }
    }

    /// The users the server has (`ACL USERS`), sorted.
    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .cli(&["ACL", "USERS"])
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect();
        users.sort();
        users
    }

    /// Everything the server can tell about the commands it saw: the slow log (every
    /// command), the ACL log and the server's log.
    pub fn what_it_saw(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.cli(&["SLOWLOG", "GET", "10000"]),
            self.cli(&["ACL", "LOG"]),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        )
    }

    /// Starts `MONITOR` (as the superuser) into `<dir>/monitor`; stopped with the server.
    pub fn monitor(&self) -> PathBuf {
        let path = self.dir.join("monitor");
        let mut cmd = Command::new("redis-cli");
        cmd.args([
            "-p",
            &self.port.to_string(),
            "--no-auth-warning",
            "--user",
            "default",
        ])
        .args(["--pass", &self.root_password, "MONITOR"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&path).unwrap())
        .stderr(Stdio::null());
        super::spawn(cmd);
        path
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        super::kill(*self.pid.lock().unwrap());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy on 127.0.0.1 in front of `port` that records every byte each client
/// connection sends (one entry per connection): what rotor put on the wire.
pub struct Recorder {
    pub port: u16,
    pub sent: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start(port: u16) -> Recorder {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap().port();
        let sent: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let record = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    else {
                        return;
                    };
                    let index = {
                        let mut r = record.lock().unwrap();
                        r.push(Vec::new());
                        r.len() - 1
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 16384];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            record.lock().unwrap()[index].extend_from_slice(&buf[..n]);
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Recorder {
            port: local,
            sent,
            task,
        }
    }

    /// Each place `value` was sent, with the 80 bytes before it.
    pub fn sent_before(&self, value: &str) -> Vec<String> {
        let sent = self.sent.lock().unwrap();
        let mut out = Vec::new();
        for conn in sent.iter() {
            let text = String::from_utf8_lossy(conn);
            let mut from = 0;
            while let Some(i) = text[from..].find(value) {
                let at = from + i;
                let start = at.saturating_sub(80);
                let start = (start..at)
                    .find(|&s| text.is_char_boundary(s))
                    .unwrap_or(at);
                out.push(text[start..at].to_string());
                from = at + value.len();
            }
        }
        out
    }

    /// Everything sent, all connections.
    pub fn all_sent(&self) -> String {
        let sent = self.sent.lock().unwrap();
        sent.iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
