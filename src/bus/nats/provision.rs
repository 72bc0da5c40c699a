//! Creating or checking the stream(s) at start-up, and in partitioned mode
//! checking that the servers' subject mapping agrees with this node.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};

use super::settings::partition_of;
use super::{NatsBus, NatsError, StreamDiff, StreamField};

/// How long partitioned mode's start-up probe may find no stream for a
/// user subject (new streams still electing leaders) before it concludes
/// that the servers lack the subject mapping.
const MAPPING_CHECK_PATIENCE: Duration = Duration::from_secs(10);

/// Why the stream(s) are not usable yet.
#[derive(Debug, thiserror::Error)]
pub(super) enum EnsureError {
    /// Wrong configuration: start-up stops.
    #[error(transparent)]
    Incompatible(NatsError),
    /// NATS not reachable or not ready yet: retried.
    #[error("{0}")]
    Transient(String),
}

fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Compares what matters for correctness and for the promised history.
fn compatible(wanted: &stream::Config, found: &stream::Config) -> Result<(), NatsError> {
    let mut diffs = Vec::new();
    let mut check = |field: StreamField, wanted: String, found: String| {
        if wanted != found {
            diffs.push(StreamDiff {
                field,
                found,
                wanted,
            });
        }
    };
    let republish = |c: &stream::Config| {
        format!(
            "{:?}",
            c.republish
                .as_ref()
                .map(|r| (&r.source, &r.destination, r.headers_only))
        )
    };
    check(
        StreamField::Subjects,
        format!("{:?}", wanted.subjects),
        format!("{:?}", found.subjects),
    );
    check(StreamField::Republish, republish(wanted), republish(found));
    check(
        StreamField::AllowDirect,
        wanted.allow_direct.to_string(),
        found.allow_direct.to_string(),
    );
    check(
        StreamField::MaxMessagesPerSubject,
        wanted.max_messages_per_subject.to_string(),
        found.max_messages_per_subject.to_string(),
    );
    check(
        StreamField::MaxAge,
        format!("{:?}", wanted.max_age),
        format!("{:?}", found.max_age),
    );
    check(
        StreamField::Replicas,
        wanted.num_replicas.to_string(),
        found.num_replicas.to_string(),
    );
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(NatsError::StreamMismatch {
            stream: wanted.name.clone(),
            diffs,
        })
    }
}

impl NatsBus {
    pub(super) async fn ensure_stream(&self) -> Result<(), EnsureError> {
        if self.streams.initialized() {
            return Ok(());
        }
        let mut streams = Vec::with_capacity(self.settings.partitions as usize);
        for partition in 0..self.settings.partitions.max(1) {
            streams.push(self.ensure_one(partition).await?);
        }
        if self.settings.partitioned() {
            self.check_mapping(&streams).await?;
        }
        // Ready means a subscribe can read the user's head: a new stream's
        // replicas answer direct gets a moment after it is created.
        for (partition, stream) in (0u32..).zip(&streams) {
            match stream
                .direct_get_last_for_subject(self.settings.probe_subject(partition))
                .await
            {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), stream::DirectGetErrorKind::NotFound) => {}
                Err(e) => {
                    return Err(EnsureError::Transient(format!(
                        "stream {} does not serve direct gets yet: {e}",
                        stream.cached_info().config.name
                    )))
                }
            }
        }
        tracing::info!(
            streams = streams.len(),
            replicas = self.settings.replicas,
            "JetStream stream(s) ready"
        );
        let _ = self.streams.set(streams);
        Ok(())
    }

    async fn ensure_one(&self, partition: u32) -> Result<stream::Stream, EnsureError> {
        let wanted = self.settings.partition_stream_config(partition);
        match self.jetstream.get_stream(&wanted.name).await {
            Ok(stream) => {
                compatible(&wanted, &stream.cached_info().config)
                    .map_err(EnsureError::Incompatible)?;
                Ok(stream)
            }
            Err(e) if is_not_found(&e) => {
                let mut wanted = wanted;
                if self.settings.partitioned() {
                    // Users moving here from the single stream keep
                    // increasing ids: start above its last sequence.
                    let floor = self.single_stream_last_sequence().await?;
                    if floor > 0 {
                        wanted.first_sequence = Some(floor + 1);
                    }
                }
                self.jetstream
                    .create_stream(wanted)
                    .await
                    .map_err(|e| EnsureError::Transient(e.to_string()))
            }
            Err(e) => Err(EnsureError::Transient(e.to_string())),
        }
    }

    /// The last sequence of the unpartitioned stream, 0 if there is none.
    async fn single_stream_last_sequence(&self) -> Result<u64, EnsureError> {
        match self.jetstream.get_stream(self.settings.stream_name()).await {
            Ok(stream) => Ok(stream.cached_info().state.last_sequence),
            Err(e) if is_not_found(&e) => Ok(0),
            Err(e) => Err(EnsureError::Transient(e.to_string())),
        }
    }

    /// Partitioned mode only works if the servers map each user to the
    /// stream this node reads that user's history from. Probes: publishes
    /// for a few reserved ids (a leading `$` is never a valid user id), reads
    /// which stream stored each (the ack names it), then purges them.
    async fn check_mapping(&self, streams: &[stream::Stream]) -> Result<(), EnsureError> {
        const PROBES: u32 = 16;
        let run = fastrand::u64(..);
        let (source, destination) = self.settings.subject_mapping().unwrap_or_default();
        for i in 0..PROBES {
            let probe = format!("$probe-{run:016x}-{i}");
            let subject = format!("{}.user.{probe}", self.settings.prefix);
            let expected = partition_of(&probe, self.settings.partitions);
            // "No stream" is normal for a moment after the streams were
            // created (no leader yet); only a lasting one means no mapping.
            let deadline = Instant::now() + MAPPING_CHECK_PATIENCE;
            let stored = loop {
                let stored = match self.jetstream.publish(subject.clone(), "{}".into()).await {
                    Ok(ack) => ack.await,
                    Err(e) => return Err(EnsureError::Transient(e.to_string())),
                };
                match stored {
                    Err(e)
                        if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound
                            && Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(250)).await
                    }
                    other => break other,
                }
            };
            let ack = match stored {
                Ok(ack) => ack,
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound => {
                    return Err(EnsureError::Incompatible(NatsError::Mapping(
                        format!(
                            "no stream stores {}.user.<id>: the NATS servers need the subject mapping \"{source}\": \"{destination}\"",
                            self.settings.prefix,
                        ),
                    )))
                }
                Err(e) => return Err(EnsureError::Transient(e.to_string())),
            };
            let wanted = self.settings.partition_stream_name(expected);
            if let Some(stream) = streams
                .iter()
                .find(|s| s.cached_info().config.name == ack.stream)
            {
                // Best effort: a leftover probe is one message nobody reads.
                let purged = format!("{}.part.*.{probe}", self.settings.prefix);
                let _ = stream.purge().filter(purged).await;
            }
            if ack.stream != wanted {
                return Err(EnsureError::Incompatible(NatsError::Mapping(
                    format!(
                        "the NATS servers stored a probe in stream {} where this node ({} partitions) reads {wanted}; every server needs the mapping \"{source}\": \"{destination}\" with the same N",
                        ack.stream, self.settings.partitions
                    ),
                )));
            }
        }
        Ok(())
    }
}
