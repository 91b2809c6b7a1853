//! `ferry up`: the whole local stack on embedded defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ferry_cloud_tier::config::{CacheConfig, MountConfig};
use ferry_cloud_tier::CloudConfig;
use ferry_protocol::ids::Role;

use ferry_edge_tier::config::{Priority, WatchConfig};
use ferry_edge_tier::models::ModelsConfig;
use ferry_edge_tier::EdgeConfig;

use crate::certs;
use crate::config::ClientConfig;

/// The id of the edge agent `ferry up` runs.
pub const UP_ROBOT: &str = "robot-1";
/// The fleet its agent joins.
pub const UP_FLEET: &str = "default";
/// The user name of its broker (the password is in `DIR/mqtt-password`).
pub const UP_MQTT_USER: &str = "ferry";
/// The access key of `ferry up`'s S3 endpoint (its secret is generated into DIR).
pub const UP_S3_KEY: &str = "ferry";

/// Runs an MQTT broker (rumqttd) on `addr` in its own threads.
fn start_broker(addr: SocketAddr, user: &str, password: &str) -> Result<()> {
    // Bind once first, so a taken port is a clear error here.
    drop(
        std::net::TcpListener::bind(addr)
            .with_context(|| format!("MQTT broker address {addr} is taken (--mqtt-listen)"))?,
    );
    let server = rumqttd::ServerSettings {
        name: "ferry-up".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 4 << 20,
            max_inflight_count: 100,
            // Only this stack's own agent and clients, which read the
            // password from DIR: nobody else on the machine can announce
            // models or report for devices.
            auth: Some([(user.to_string(), password.to_string())].into()),
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 104_857_600,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some([("ferry-up".to_string(), server)].into()),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new().name("mqtt-broker".into()).spawn(move || {
        if let Err(e) = rumqttd::Broker::new(config).start() {
            eprintln!("ferry: MQTT broker stopped: {e}");
        }
    })?;
    Ok(())
}

/// A secret kept in `DIR/NAME` (readable by its owner only), made on the
/// first start: the broker's password, the S3 endpoint's secret key.
fn secret(data: &Path, name: &str) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data.join(name);
    if let Ok(p) = std::fs::read_to_string(&path) {
        let p = p.trim().to_string();
        if !p.is_empty() {
            return Ok(p);
        }
    }
    let mut bytes = [0u8; 18];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("write {}", path.display()))?;
    writeln!(f, "{password}")?;
    Ok(password)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(p).with_context(|| format!("create {}", p.display()))?;
    p.canonicalize().with_context(|| format!("resolve {}", p.display()))
}

/// The configuration in `path` if there is one (a user's edits stay), or
/// `default`, written there.
fn keep_or_write<T: serde::Serialize>(path: &Path, default: &T, load: impl Fn(&Path) -> Result<T>) -> Result<T> {
    if path.exists() {
        eprintln!("ferry: using {} (delete it to start from the defaults)", path.display());
        return load(path);
    }
    std::fs::write(path, toml::to_string_pretty(default)?).with_context(|| format!("write {}", path.display()))?;
    load(path)
}

/// Runs the stack until interrupted.
pub async fn run(
    data: &Path,
    listen: SocketAddr,
    metrics_listen: SocketAddr,
    mqtt_listen: SocketAddr,
    s3_listen: SocketAddr,
    attr_ttl: std::time::Duration,
) -> Result<()> {
    let data = absolute(data)?;
    let _lock = crate::lock::directory(&data, "the data directory")?;
    let store = data.join("store");
    let certs_dir = data.join("certs");
    std::fs::create_dir_all(store.join("datasets"))?;
    let sample = store.join("datasets").join("hello.txt");
    if std::fs::read_dir(store.join("datasets"))?.next().is_none() {
        std::fs::write(&sample, "hello from ferry\n")?;
    }
    certs::ensure(&certs_dir, &[(Role::Cloud, "cloud-1"), (Role::Client, "client"), (Role::Edge, UP_ROBOT)])?;

    let cloud_toml = data.join("cloud.toml");
    let cloud = CloudConfig {
        node_id: "cloud-1".into(),
        listen,
        metrics_listen: metrics_listen.to_string(),
        certs: certs_dir.clone(),
        cache: CacheConfig { disk_dir: data.join("cache"), ..CacheConfig::default() },
        mounts: [("/".to_string(), MountConfig { url: format!("file://{}", store.display()), ..Default::default() })]
            .into(),
        ..CloudConfig::default()
    };
    let cloud = keep_or_write(&cloud_toml, &cloud, crate::config::load_cloud)?;
    let _cache_lock = crate::lock::directory(&cloud.cache.disk_dir, "the cache directory")?;
    let node = ferry_cloud_tier::RunningNode::start(&cloud).await.context("cannot start the cache node")?;

    let mqtt_password = secret(&data, "mqtt-password")?;
    let client = ClientConfig {
        nodes: vec![node.addr.to_string()],
        certs: certs_dir,
        id: "client".into(),
        fleet: UP_FLEET.into(),
        mqtt: mqtt_listen.to_string(),
        mqtt_user: UP_MQTT_USER.into(),
        mqtt_password: mqtt_password.clone(),
        s3: crate::config::S3Config {
            listen: s3_listen.to_string(),
            staging: data.join("s3-staging"),
            keys: vec![crate::config::S3KeyConfig {
                access_key: UP_S3_KEY.into(),
                secret_key: secret(&data, "s3-secret")?,
                identity: String::new(),
            }],
        },
        ..ClientConfig::default()
    };
    let client_toml = data.join("client.toml");
    let client = keep_or_write(&client_toml, &client, |p| ClientConfig::load(Some(p)))?;

    // Model announcements: an MQTT broker in this process.
    start_broker(mqtt_listen, UP_MQTT_USER, &mqtt_password)?;

    // The robot side: an edge agent uploading whatever lands in DIR/robot
    // and installing the models pushed to its fleet into DIR/models.
    let robot = data.join("robot");
    std::fs::create_dir_all(&robot)?;
    let edge_cfg = EdgeConfig {
        id: UP_ROBOT.into(),
        certs: client.certs.clone(),
        nodes: vec![node.addr.to_string()],
        spool: data.join("edge").join("spool.db"),
        settle: std::time::Duration::from_secs(2),
        commit_interval: std::time::Duration::from_secs(10),
        watch: vec![WatchConfig { dir: robot.clone(), pattern: "**".into(), priority: Priority::Normal, name: None }],
        models: ModelsConfig {
            mqtt: mqtt_listen.to_string(),
            mqtt_user: UP_MQTT_USER.into(),
            mqtt_password,
            fleet: UP_FLEET.into(),
            dir: data.join("models"),
            signing_key: client.certs.join("fleet-signing.pub"),
            ..ModelsConfig::default()
        },
        ..EdgeConfig::default()
    };
    let edge_cfg = keep_or_write(&data.join("edge.toml"), &edge_cfg, crate::edge::load_edge)?;
    let agent = crate::edge::start(edge_cfg).await?;
    let (stop_edge, edge_stopped) = tokio::sync::oneshot::channel::<()>();
    let edge_task = tokio::spawn(agent.run(async {
        let _ = edge_stopped.await;
    }));

    // The S3 endpoint, with the key in client.toml.
    let s3 = if client.s3.keys.is_empty() {
        eprintln!(
            "ferry: no S3 endpoint: {} has no [[s3.keys]] (delete it to get the defaults)",
            client_toml.display()
        );
        None
    } else {
        Some(crate::s3::start(&client, None).await?)
    };

    let mnt = data.join("mnt");
    let mounted = if std::path::Path::new("/dev/fuse").exists() {
        let _ = std::fs::create_dir_all(&mnt);
        let cluster = crate::read::connect(&client).await?;
        let opts = crate::mount::Options {
            staging: data.join("staging"),
            local_copies: 4 << 30,
            prefetch: Default::default(),
            metrics_listen: None,
            attr_ttl,
        };
        match crate::mount::start(cluster, &mnt, &opts).await {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("ferry: not mounting {}: {e:#}", mnt.display());
                None
            }
        }
    } else {
        eprintln!("ferry: FUSE is not available (/dev/fuse missing; install fuse3): not mounting {}", mnt.display());
        None
    };

    println!("ferry is up.");
    println!("  cache node   {} over {}", node.addr, store.display());
    if let Some(m) = node.metrics_addr {
        println!("  metrics      http://{m}/metrics");
    }
    println!("  client conf  {}", client_toml.display());
    println!("  edge agent   {UP_ROBOT} uploading {} to /logs/{UP_ROBOT}/robot/", robot.display());
    println!("  mqtt broker  {mqtt_listen} (fleet {UP_FLEET}; models install into {})", data.join("models").display());
    if mounted.is_some() {
        println!("  mount        {}", mnt.display());
    }
    if let (Some(s3), Some(key)) = (&s3, client.s3.keys.first()) {
        println!(
            "  s3 endpoint  http://{} (access key {}, secret key in {})",
            s3.addr,
            key.access_key,
            client_toml.display()
        );
    }
    println!();
    println!("Try:");
    let me = crate::invoked_as();
    println!("  {me} ls   --config {} /datasets", client_toml.display());
    println!("  {me} cat  --config {} /datasets/hello.txt", client_toml.display());
    println!("  {me} stat ferry://{}/datasets/hello.txt --config {}", node.addr, client_toml.display());
    if let (Some(s3), Some(key)) = (&s3, client.s3.keys.first()) {
        println!(
            "  AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} aws --endpoint-url http://{} s3 ls s3://datasets/",
            key.access_key, key.secret_key, s3.addr
        );
    }
    println!("Files you put under {} appear under / in the namespace.", store.display());
    println!(
        "Files you drop into {} are uploaded to {}/logs/{UP_ROBOT}/robot/ (progress: {me} edge status --config {}).",
        robot.display(),
        store.display(),
        data.join("edge.toml").display()
    );
    println!(
        "  {me} model push demo-v1 FILE --config {}   (then: {me} model status demo --config {})",
        client_toml.display(),
        client_toml.display()
    );
    println!("Stop with Ctrl-C.");

    crate::signal::wait_for_shutdown().await;
    println!("ferry: shutting down");
    let _ = stop_edge.send(());
    match edge_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("ferry: edge agent: {e}"),
        Err(e) => eprintln!("ferry: edge agent: {e}"),
    }
    if let Some(m) = mounted {
        if let Err(e) = tokio::task::spawn_blocking(move || m.unmount()).await? {
            eprintln!("ferry: {e:#}");
        }
    }
    if let Some(s3) = s3 {
        if let Err(e) = s3.shutdown().await {
            eprintln!("ferry: {e:#}");
        }
    }
    node.shutdown().await;
    Ok(())
}
