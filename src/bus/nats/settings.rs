//! What the node asks of NATS: servers, credentials, and the names and
//! configuration of its streams and subjects.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::stream;
use async_nats::ConnectOptions;

use super::{NatsError, NatsSetting};
use crate::user_id::UserId;

/// How long JetStream remembers a `Nats-Msg-Id` (publish retries must fit).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// NATS settings of the node.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// Server URLs.
    pub urls: Vec<String>,
    /// Subject prefix, e.g. `campusbite.notify`.
    pub prefix: String,
    /// Stream replicas.
    pub replicas: usize,
    /// Notifications kept per user.
    pub depth: i64,
    /// How long they are kept.
    pub max_age: Duration,
    /// Streams the users are partitioned over (1 = one stream, no mapping).
    pub partitions: u32,
    /// How the node authenticates.
    pub auth: NatsAuth,
    /// TLS towards the servers.
    pub tls: NatsTls,
}

/// How the node proves who it is to the NATS servers (one method).
#[derive(Clone, Default)]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A `.creds` file (user JWT and NKey seed).
    CredsFile(PathBuf),
    /// User name and password.
    UserPassword {
        /// The user.
        user: String,
        /// Its password.
        password: String,
    },
    /// A token.
    Token(String),
}

impl fmt::Debug for NatsAuth {
    /// Never shows a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::CredsFile(path) => f.debug_tuple("CredsFile").field(path).finish(),
            Self::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .finish_non_exhaustive(),
            Self::Token(_) => f.write_str("Token(..)"),
        }
    }
}

impl NatsAuth {
    /// The setting to name when the servers refuse these credentials.
    pub(super) fn setting(&self) -> NatsSetting {
        match self {
            Self::None => NatsSetting::Urls,
            Self::CredsFile(_) => NatsSetting::CredsFile,
            Self::UserPassword { .. } => NatsSetting::Password,
            Self::Token(_) => NatsSetting::Token,
        }
    }
}

/// TLS towards the NATS servers.
#[derive(Debug, Clone, Default)]
pub struct NatsTls {
    /// PEM CA certificate(s) the servers' certificates must chain to; TLS
    /// is then required.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and its key, for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// The partition of `user` among `partitions`, exactly as nats-server's
/// `partition(N, 1)` mapping function computes it: FNV-1a (32 bit) of the
/// token's bytes, modulo N (`getHashPartition` in
/// nats-server/server/subject_transform.go).
pub fn partition_of(user: &str, partitions: u32) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let hash = user
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u32::from(b)).wrapping_mul(PRIME));
    hash % partitions.max(1)
}

impl NatsSettings {
    /// The connection options these settings ask for: credentials and TLS.
    pub(super) async fn connect_options(&self) -> Result<ConnectOptions, NatsError> {
        let mut options = ConnectOptions::new();
        options = match &self.auth {
            NatsAuth::None => options,
            NatsAuth::CredsFile(path) => {
                options
                    .credentials_file(path)
                    .await
                    .map_err(|e| NatsError::Connect {
                        setting: NatsSetting::CredsFile,
                        why: format!("{}: {e}", path.display()),
                    })?
            }
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            NatsAuth::Token(token) => options.token(token.clone()),
        };
        if let Some(ca) = &self.tls.ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.tls.client_cert {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        Ok(options)
    }

    /// The stream's name: the prefix in capitals, `.` as `_`; in partitioned
    /// mode the base of `<name>_<partition>`.
    pub fn stream_name(&self) -> String {
        self.prefix.replace('.', "_").to_uppercase()
    }

    pub(super) fn partitioned(&self) -> bool {
        self.partitions > 1
    }

    /// The name of stream `partition` (the single stream's name when not partitioned).
    pub fn partition_stream_name(&self, partition: u32) -> String {
        if self.partitioned() {
            format!("{}_{partition}", self.stream_name())
        } else {
            self.stream_name()
        }
    }

    /// The NATS server subject mapping partitioned mode needs (source,
    /// destination); `None` with one stream. Every server of the cluster must
    /// have it, with the same N as this node.
    pub fn subject_mapping(&self) -> Option<(String, String)> {
        self.partitioned().then(|| {
            (
                format!("{}.user.*", self.prefix),
                format!(
                    "{}.part.{{{{partition({},1)}}}}.{{{{wildcard(1)}}}}",
                    self.prefix, self.partitions
                ),
            )
        })
    }

    pub(super) fn partition(&self, user: &UserId) -> u32 {
        partition_of(user.as_str(), self.partitions)
    }

    /// Where producers publish: `<prefix>.user.<id>`, in either mode.
    pub(super) fn user_subject(&self, user: &UserId) -> String {
        format!("{}.user.{}", self.prefix, user.as_str())
    }

    /// Where the stream keeps `user`'s messages (direct-get subject).
    pub(super) fn stored_subject(&self, user: &UserId) -> String {
        if self.partitioned() {
            format!(
                "{}.part.{}.{}",
                self.prefix,
                self.partition(user),
                user.as_str()
            )
        } else {
            self.user_subject(user)
        }
    }

    /// A subject of partition `partition`'s stream that no user has (a user
    /// id never starts with `$`): a direct get of it answers "not found"
    /// once the stream serves direct gets.
    pub(super) fn probe_subject(&self, partition: u32) -> String {
        if self.partitioned() {
            format!("{}.part.{partition}.$probe", self.prefix)
        } else {
            format!("{}.user.$probe", self.prefix)
        }
    }

    pub(super) fn live_subject(&self, user: &UserId) -> String {
        format!("{}.live.{}", self.prefix, user.as_str())
    }

    /// The stream configuration this node needs (the first partition's in
    /// partitioned mode).
    pub fn stream_config(&self) -> stream::Config {
        self.partition_stream_config(0)
    }

    /// The configuration of stream `partition`.
    pub fn partition_stream_config(&self, partition: u32) -> stream::Config {
        let captured = if self.partitioned() {
            format!("{}.part.{partition}.*", self.prefix)
        } else {
            format!("{}.user.*", self.prefix)
        };
        stream::Config {
            name: self.partition_stream_name(partition),
            description: Some("campusbite-notify: per-user notification history".into()),
            subjects: vec![captured.clone()],
            max_messages_per_subject: self.depth,
            max_age: self.max_age,
            num_replicas: self.replicas,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            duplicate_window: DUPLICATE_WINDOW.min(self.max_age),
            allow_direct: true,
            republish: Some(stream::Republish {
                source: captured,
                destination: format!("{}.live.{{{{wildcard(1)}}}}", self.prefix),
                headers_only: false,
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(partitions: u32) -> NatsSettings {
        NatsSettings {
            urls: vec![],
            prefix: "campusbite.notify".into(),
            replicas: 3,
            depth: 100,
            max_age: Duration::from_secs(3600),
            partitions,
            auth: NatsAuth::None,
            tls: NatsTls::default(),
        }
    }

    #[test]
    fn partition_is_fnv1a_32_mod_n() {
        // FNV-1a 32-bit reference values.
        assert_eq!(partition_of("", u32::MAX), 0x811c_9dc5);
        assert_eq!(partition_of("a", u32::MAX), 0xe40c_292c);
        assert_eq!(partition_of("foobar", u32::MAX), 0xbf9c_f968);
        assert_eq!(partition_of("foobar", 7), 0xbf9c_f968 % 7);
        assert_eq!(partition_of("anything", 1), 0);
    }

    #[test]
    fn one_partition_is_the_single_stream_of_before() {
        let s = settings(1);
        let c = s.partition_stream_config(0);
        assert_eq!(c.name, "CAMPUSBITE_NOTIFY");
        assert_eq!(c.subjects, vec!["campusbite.notify.user.*".to_string()]);
        let r = c.republish.unwrap();
        assert_eq!(r.source, "campusbite.notify.user.*");
        assert_eq!(r.destination, "campusbite.notify.live.{{wildcard(1)}}");
        assert!(s.subject_mapping().is_none());
        let u = UserId::parse("u1").unwrap();
        assert_eq!(s.stored_subject(&u), "campusbite.notify.user.u1");
    }

    #[test]
    fn partitioned_streams_capture_their_partition_and_republish_to_live() {
        let s = settings(4);
        let c = s.partition_stream_config(3);
        assert_eq!(c.name, "CAMPUSBITE_NOTIFY_3");
        assert_eq!(c.subjects, vec!["campusbite.notify.part.3.*".to_string()]);
        let r = c.republish.unwrap();
        assert_eq!(r.source, "campusbite.notify.part.3.*");
        assert_eq!(r.destination, "campusbite.notify.live.{{wildcard(1)}}");
        assert_eq!(
            s.subject_mapping(),
            Some((
                "campusbite.notify.user.*".to_string(),
                "campusbite.notify.part.{{partition(4,1)}}.{{wildcard(1)}}".to_string()
            ))
        );
        let u = UserId::parse("foobar").unwrap();
        assert_eq!(
            s.stored_subject(&u),
            format!("campusbite.notify.part.{}.foobar", 0xbf9c_f968_u32 % 4)
        );
        assert_eq!(s.user_subject(&u), "campusbite.notify.user.foobar");
    }
}
