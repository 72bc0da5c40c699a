//! What a user's actor holds per stream besides its frame queue
//! ([`crate::frame_queue`]) and its node slot ([`crate::slots`]): a way to
//! cut the client off.
//!
//! Ending a stream's body is not enough for a client that stopped reading
//! (the HTTP layer only polls a body while it can write). The edge that owns
//! the connection implements [`SinkCutOff`] (the HTTP module does, for the
//! TCP socket under HTTP/1.1, HTTP/1.1 over TLS and HTTP/2); the actor only
//! calls it.

use std::sync::Arc;

/// Ends the connection under a stream, whatever its client does, when that
/// is what it takes to end the stream.
pub trait SinkCutOff: Send + Sync + 'static {
    /// Cuts the connection off if needed; harmless if it is already gone.
    fn cut_off(&self);

    /// Whether a stream whose body waits for its next frame can still be
    /// ended cleanly: only where a body waiting means everything before it
    /// was handed to a connection that moves (not on HTTP/2, where a stream
    /// with no window keeps one chunk unsent while its body waits).
    fn can_end_cleanly(&self) -> bool;
}

/// A shared cut-off handle, as the actor keeps it per stream.
pub type CutOffHandle = Arc<dyn SinkCutOff>;
