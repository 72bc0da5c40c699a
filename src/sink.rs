//! What a user's actor holds per stream besides its frame queue
//! ([`crate::frame_queue`]): a way to cut the client off.
//!
//! Ending a stream's body is not enough for a client that stopped reading
//! (the HTTP layer only polls a body while it can write). The edge that owns
//! the connection implements [`SinkCutOff`] (the HTTP module does, for the
//! TCP socket of an HTTP/1.x connection); the actor only calls it.

use std::sync::Arc;

/// Ends the connection under a stream at once, whatever its client does.
pub trait SinkCutOff: Send + Sync + 'static {
    /// Cuts the connection off; harmless if it is already gone.
    fn cut_off(&self);
}

/// A shared cut-off handle, as the actor keeps it per stream.
pub type CutOffHandle = Arc<dyn SinkCutOff>;
