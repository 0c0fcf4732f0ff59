//! A real Kubernetes control plane for rotor's integration tests.
//!
//! One etcd + kube-apiserver per test binary, on free loopback ports, started on first
//! use (kube-controller-manager too, when a test asks). The binaries come from
//! `KUBEBUILDER_ASSETS`, else from `~/.cache/rotor/envtest/bin` (`hack/envtest.sh`
//! builds them). Every child process is started by one long-lived thread with
//! PR_SET_PDEATHSIG, so none outlives the test binary, and an atexit hook kills them
//! and removes the scratch directory when the binary exits normally.
#![allow(dead_code)]

pub mod fakes;
pub mod kube_util;
pub mod mariadb;
pub mod moto;
pub mod postgres;
pub mod redis;
pub mod scenario;

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use kube_util::*;

const ADMIN_TOKEN: &str = "rotor-test-admin-token";

/// The shared control plane.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub apiserver_url: String,
    /// The etcd and kube-apiserver processes (the bench reads their CPU time).
    pub etcd_pid: u32,
    /// etcd's client URL (plain HTTP on loopback).
    pub etcd_url: String,
    pub apiserver_pid: u32,
    assets: PathBuf,
    controller_manager: OnceLock<()>,
}

static PLANE: OnceLock<ControlPlane> = OnceLock::new();
/// Every credential value this test binary has seen: issued by a fake, or read by a
/// test from a Secret. [`kube_util::assert_no_leak`] scans everything every operator
/// of the binary produced for all of them.
static ISSUED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Notes a credential value for the suite-wide leak scan.
pub fn remember_issued(value: &str) {
    let mut issued = ISSUED.lock().unwrap_or_else(|e| e.into_inner());
    if !issued.iter().any(|v| v == value) {
        issued.push(value.to_string());
    }
}

/// The values noted so far.
pub fn issued() -> Vec<String> {
    ISSUED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());
static SCRATCH: Mutex<Option<PathBuf>> = Mutex::new(None);
type SpawnRequest = (Command, mpsc::Sender<std::io::Result<u32>>);
static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

/// Starts `cmd` from the spawner thread (which lives as long as the process), so the
/// child gets SIGKILL when this test binary dies, however it dies.
pub fn spawn(mut cmd: Command) -> u32 {
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("rotor-test-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    unsafe {
                        cmd.pre_exec(|| {
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn().map(|child| {
                        let pid = child.id();
                        // The child is reaped by the spawner thread when it exits.
                        std::thread::spawn(move || {
                            let mut child = child;
                            let _ = child.wait();
                        });
                        pid
                    }));
                }
                // Keep the thread (the children's parent) alive until the process ends.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    // Make the spawner own the command.
    let program = cmd.get_program().to_owned();
    tx.lock()
        .unwrap()
        .send((std::mem::replace(&mut cmd, Command::new("true")), reply_tx))
        .unwrap();
    let pid = reply_rx
        .recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("starting {program:?}: {e}"));
    CHILDREN.lock().unwrap().push(pid as i32);
    pid
}

/// Sends SIGKILL to `pid` (no graceful shutdown: that is the point).
pub fn kill(pid: u32) {
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

extern "C" fn cleanup_at_exit() {
    if let Ok(children) = CHILDREN.lock() {
        for pid in children.iter() {
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
    }
    let Ok(Some(dir)) = SCRATCH.lock().map(|d| d.clone()) else {
        return;
    };
    // The final leak scan of this test binary: every operator log, written to its end
    // (the operators are dead now), against every value any of its tests saw. A test's
    // own scan ran while other operators were still writing.
    if let Some((place, fingerprint, form)) = final_leak_scan(&dir) {
        eprintln!(
            "LEAK: a credential value ({fingerprint}) appears {form} in {place}; \
             test directory kept: {}",
            dir.display()
        );
        unsafe { libc::_exit(1) };
    }
    if std::env::var_os("ROTOR_KEEP_TEST_DIR").is_none() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn final_leak_scan(dir: &Path) -> Option<(String, String, &'static str)> {
    let values = issued();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if !file.starts_with("operator-") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if let Some((v, form)) = kube_util::find_leak(&text, &values) {
            return Some((file, rotor::rotation::fingerprint(v), form));
        }
    }
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn assets() -> PathBuf {
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME");
    let dir = PathBuf::from(home).join(".cache/rotor/envtest/bin");
    assert!(
        dir.join("kube-apiserver").exists(),
        "no kube-apiserver in {}: run `hack/envtest.sh` (or `make test`), or set KUBEBUILDER_ASSETS",
        dir.display()
    );
    dir
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(format!("{name}.log"))).unwrap()
}

/// The shared control plane, started on first use.
pub fn control_plane() -> &'static ControlPlane {
    PLANE.get_or_init(start_control_plane)
}

fn start_control_plane() -> ControlPlane {
    let assets = assets();
    let dir =
        std::env::temp_dir().join(format!("rotor-test-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    *SCRATCH.lock().unwrap() = Some(dir.clone());
    unsafe {
        libc::atexit(cleanup_at_exit);
    }

    let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
    let mut etcd = Command::new(assets.join("etcd"));
    etcd.args([
        "--data-dir",
        dir.join("etcd").to_str().unwrap(),
        "--listen-client-urls",
        &format!("http://127.0.0.1:{etcd_port}"),
        "--advertise-client-urls",
        &format!("http://127.0.0.1:{etcd_port}"),
        "--listen-peer-urls",
        &format!("http://127.0.0.1:{peer_port}"),
        "--unsafe-no-fsync",
    ])
    // The bench's profiles of where etcd's time goes (loopback only).
    .args(
        std::env::var_os("ROTOR_BENCH_PPROF")
            .is_some()
            .then_some("--enable-pprof"),
    )
    .stdout(log_file(&dir, "etcd"))
    .stderr(log_file(&dir, "etcd-err"))
    .stdin(Stdio::null());
    let etcd_pid = spawn(etcd);

    let status = Command::new("openssl")
        .args(["genrsa", "-out", "sa.key", "2048"])
        .current_dir(&dir)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    let status = Command::new("openssl")
        .args(["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])
        .current_dir(&dir)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        dir.join("tokens.csv"),
        format!("{ADMIN_TOKEN},admin,admin,\"system:masters\"\n"),
    )
    .unwrap();

    let mut api = Command::new(assets.join("kube-apiserver"));
    api.current_dir(&dir)
        .args([
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--cert-dir={}", dir.join("certs").display()),
            "--token-auth-file=tokens.csv".into(),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--service-account-key-file=sa.pub".into(),
            "--service-account-signing-key-file=sa.key".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
        ])
        // Tests run without API Priority and Fairness (fewer moving parts); the bench
        // turns it on (ROTOR_HARNESS_APF=1), so that its "no 429s" means something.
        .args(
            (std::env::var("ROTOR_HARNESS_APF").as_deref() != Ok("1"))
                .then_some("--enable-priority-and-fairness=false"),
        )
        // The bench compacts etcd itself, between its timed runs.
        .args(
            (std::env::var("ROTOR_HARNESS_BENCH_COMPACTION").as_deref() == Ok("1"))
                .then_some("--etcd-compaction-interval=0"),
        )
        .stdout(log_file(&dir, "kube-apiserver"))
        .stderr(log_file(&dir, "kube-apiserver-err"))
        .stdin(Stdio::null());
    let apiserver_pid = spawn(api);

    let apiserver_url = format!("https://127.0.0.1:{api_port}");
    let kubeconfig = dir.join("kubeconfig");
    let mut f = std::fs::File::create(&kubeconfig).unwrap();
    write!(
        f,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {apiserver_url}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\ncontexts:\n- name: test\n  context: {{cluster: test, user: admin, namespace: default}}\ncurrent-context: test\n"
    )
    .unwrap();
    drop(f);

    wait_ready(&apiserver_url, &dir);
    let plane = ControlPlane {
        dir,
        kubeconfig,
        apiserver_url,
        etcd_pid,
        etcd_url: format!("http://127.0.0.1:{etcd_port}"),
        apiserver_pid,
        assets,
        controller_manager: OnceLock::new(),
    };
    install_crd(&plane);
    plane
}

/// Polls /readyz (bounded) until the API server answers ok.
fn wait_ready(url: &str, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let out = Command::new("curl")
            .args([
                "-sk",
                "-m",
                "2",
                "-H",
                &format!("Authorization: Bearer {ADMIN_TOKEN}"),
                &format!("{url}/readyz"),
            ])
            .output();
        if out.is_ok_and(|out| out.stdout == b"ok") {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = std::fs::read_to_string(dir.join("kube-apiserver-err.log")).unwrap_or_default();
    let tail: String = log
        .lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    panic!("kube-apiserver did not become ready within 90s; log tail:\n{tail}");
}

fn install_crd(plane: &ControlPlane) {
    // Called from inside a test's runtime: run a runtime of its own on another thread.
    std::thread::scope(|scope| {
        scope
            .spawn(|| install_crd_blocking(plane))
            .join()
            .expect("installing the CRD");
    });
}

fn install_crd_blocking(plane: &ControlPlane) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = plane.client().await;
        let crd = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/crds/secretrotation.yaml"
        ))
        .unwrap();
        apply_yaml(&client, "default", &crd)
            .await
            .expect("installing the CRD");
        wait_crd_established(&client, "secretrotations.rotor.dev").await;
    });
}

impl ControlPlane {
    /// A fresh admin client (one per test runtime).
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Starts kube-controller-manager (garbage collector, Deployments, ReplicaSets,
    /// service accounts, namespaces, ClusterRole aggregation) once for this binary.
    pub fn with_controller_manager(&self) -> &Self {
        self.controller_manager.get_or_init(|| {
            let mut cm = Command::new(self.assets.join("kube-controller-manager"));
            cm.current_dir(&self.dir)
                .args([
                    format!("--kubeconfig={}", self.kubeconfig.display()),
                    "--controllers=garbagecollector,deployment,replicaset,statefulset,daemonset,serviceaccount-token,serviceaccount,namespace,clusterrole-aggregation".into(),
                    "--service-account-private-key-file=sa.key".into(),
                    "--leader-elect=false".into(),
                    "--bind-address=127.0.0.1".into(),
                    "--secure-port=0".into(),
                    "--port=0".into(),
                    "--use-service-account-credentials=false".into(),
                ])
                .stdout(log_file(&self.dir, "kube-controller-manager"))
                .stderr(log_file(&self.dir, "kube-controller-manager-err"))
                .stdin(Stdio::null());
            spawn(cm);
        });
        self
    }
}

/// Runs the `rotor` CLI against the test cluster; its stdout (fails on a non-zero exit).
pub fn rotor_cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(args)
        .env("KUBECONFIG", &control_plane().kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rotor {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of the sample `series` (metric name and labels, as exported) on the
/// operator's /metrics, if it is there.
pub async fn metric(op: &Operator, series: &str) -> Option<f64> {
    let out = tokio::process::Command::new("curl")
        .args(["-s", &format!("{}/metrics", op.admin_url)])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
}

/// The whole text of the operator's /metrics (empty if it did not answer).
pub async fn metrics_text(op: &Operator) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-m", "10", &format!("{}/metrics", op.admin_url)])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every reconcile `op` ran, whatever its result (`rotor_reconciles_total`).
pub async fn reconciles(op: &Operator) -> f64 {
    let mut total = 0.0;
    for result in ["ok", "error", "deferred"] {
        let series = format!("rotor_reconciles_total{{result=\"{result}\"}}");
        total += metric(op, &series).await.unwrap_or(0.0);
    }
    total
}

/// Waits (bounded, 60 s) until the sample `series` on the operator's /metrics is at
/// least `min`.
/// Waits (bounded) until the operator's log says `what` (`context` names the wait in
/// the failure).
pub async fn wait_log(op: &Operator, what: &str, context: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !op.logs().contains(what) {
        assert!(
            Instant::now() < deadline,
            "the operator never logged {what:?} ({context}):\n{}",
            op.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_metric(op: &Operator, series: &str, min: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = metric(op, series).await;
        if value.is_some_and(|v| v >= min) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} not at {min} within 60s (now {value:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The rotor operator running as its own process (`rotor run`), scoped to one
/// namespace so tests sharing the API server do not see each other.
pub struct Operator {
    pub pid: u32,
    pub log: PathBuf,
    /// The admin server (/metrics, /livez, /readyz), on loopback.
    pub admin_url: String,
}

impl Operator {
    pub fn start(namespace: &str) -> Self {
        Self::start_with(namespace, &[])
    }

    pub fn start_with(namespace: &str, extra: &[&str]) -> Self {
        Self::start_env(namespace, extra, &[])
    }

    pub fn start_env(namespace: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let plane = control_plane();
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = plane.dir.join(format!("operator-{namespace}-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let admin = format!("127.0.0.1:{}", free_port());
        // ROTOR_TEST_WRAP="heaptrack -o /tmp/rotor-{n}" (or "perf record -g -o
        // /tmp/perf-{n} --") runs each operator under a profiler, {n} its sequence
        // number: how the bench's memory numbers were explained. For profiling only:
        // the pid kept (kill, CPU, RSS) is then the profiler's, and rotor may outlive a
        // harness that dies (pkill -x rotor).
        let wrap = std::env::var("ROTOR_TEST_WRAP")
            .unwrap_or_default()
            .replace("{n}", &n.to_string());
        let mut wrap = wrap.split_whitespace();
        let mut cmd = match wrap.next() {
            Some(program) => {
                let mut cmd = Command::new(program);
                cmd.args(wrap).arg(env!("CARGO_BIN_EXE_rotor"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_rotor")),
        };
        cmd.args([
            "run",
            "--namespace",
            namespace,
            "--log-format",
            "json",
            "--metrics-address",
            &admin,
        ])
        .args(extra)
        .env("KUBECONFIG", &plane.kubeconfig)
        .env("ROTOR_LOG", "info,rotor=debug")
        // Its own operator namespace: each test gets its own vault KEK Secret.
        .env(
            "POD_NAMESPACE",
            namespace.split(',').next().unwrap_or(namespace),
        )
        .envs(env.iter().copied())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .stdin(Stdio::null());
        let pid = spawn(cmd);
        Self {
            pid,
            log,
            admin_url: format!("http://{admin}"),
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&self) {
        kill(self.pid);
    }

    /// SIGKILLs the operator and waits (bounded, 60 s) until the process is gone, so
    /// nothing it still had in flight can land after this returns.
    pub async fn stop(&self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Gone once reaped (the spawner thread waits for it): /proc has no entry.
        while Path::new(&format!("/proc/{}", self.pid)).exists() {
            assert!(
                Instant::now() < deadline,
                "operator {} still running 60s after SIGKILL",
                self.pid
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the operator process has exited (and been reaped).
    pub fn exited(&self) -> bool {
        !Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}
