//! The shipped NATS permission model for test servers: the authorization
//! block `cluster/render-nats-auth` prints from `cluster/nats-auth.conf.tmpl`
//! (so the tests check the model every deployment uses), with passwords
//! generated once per test process, plus one test-only admin user.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::nats::repo_root;
use crate::random_hex;

/// The subject prefix the tests use.
pub const PREFIX: &str = "campusbite.notify";

/// One NATS user.
#[derive(Debug, Clone)]
pub struct NatsUser {
    pub user: String,
    pub password: String,
}

/// The users of the test servers.
#[derive(Debug)]
pub struct NatsUsers {
    /// The shipped model's gateway user: what nodes connect with.
    pub gateway: NatsUser,
    /// The shipped model's producer user: what test producers connect with.
    pub producer: NatsUser,
    /// Test-only, never in a shipped configuration: no permissions block,
    /// so it may do anything. Only tests that inject faults (leader
    /// step-downs, raw JetStream calls) or forge live messages use it.
    pub admin: NatsUser,
}

/// The users, with passwords generated once per test process.
pub fn users() -> &'static NatsUsers {
    static USERS: OnceLock<NatsUsers> = OnceLock::new();
    USERS.get_or_init(|| {
        let user = |name: &str| NatsUser {
            user: name.to_string(),
            password: random_hex(32),
        };
        NatsUsers {
            gateway: user("notify-gateway"),
            producer: user("notify-producer"),
            admin: user("notify-test-admin"),
        }
    })
}

/// `NOTIFY_NATS_USER` / `NOTIFY_NATS_PASSWORD` of the gateway user, for
/// tests that pass a node's settings one by one.
pub fn gateway_envs() -> [(&'static str, &'static str); 2] {
    let gateway = &users().gateway;
    [
        ("NOTIFY_NATS_USER", gateway.user.as_str()),
        ("NOTIFY_NATS_PASSWORD", gateway.password.as_str()),
    ]
}

/// The permission model exactly as shipped: `cluster/render-nats-auth`'s
/// output for the test prefix and `partitions` streams.
pub fn shipped_model(partitions: u32) -> String {
    let out = Command::new(repo_root().join("cluster/render-nats-auth"))
        .args(["--prefix", PREFIX, "--partitions", &partitions.to_string()])
        .output()
        .expect("run cluster/render-nats-auth");
    assert!(
        out.status.success(),
        "cluster/render-nats-auth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The authorization block for `partitions` streams: the shipped model as
/// rendered by `cluster/render-nats-auth`, plus the test-only admin user.
pub fn auth_conf(partitions: u32) -> String {
    let model = shipped_model(partitions);
    // The users list ends the block: `  ]` then `}`.
    let end = model
        .rfind("\n  ]\n")
        .expect("the rendered model ends with its users list");
    let admin = &users().admin;
    format!(
        "{}\n    {{\n      # Test-only admin (fault injection, forged messages); never shipped.\n      user: \"{}\"\n      password: \"{}\"\n    }}{}",
        &model[..end],
        admin.user,
        admin.password,
        &model[end..]
    )
}

/// Writes [`auth_conf`] to `path`.
pub fn write_auth_conf(path: &Path, partitions: u32) {
    std::fs::write(path, auth_conf(partitions)).expect("write the NATS authorization");
}

/// The environment the rendered model reads its users from: each value a
/// quoted NATS string, as `cluster/up` and the chart pass them.
pub fn server_env(cmd: &mut Command) {
    let u = users();
    let quoted = |v: &str| format!("\"{v}\"");
    cmd.env("NATS_GATEWAY_USER", quoted(&u.gateway.user))
        .env("NATS_GATEWAY_PASSWORD", quoted(&u.gateway.password))
        .env("NATS_PRODUCER_USER", quoted(&u.producer.user))
        .env("NATS_PRODUCER_PASSWORD", quoted(&u.producer.password));
}
