//! The bounded queue between a user's actor and one stream's HTTP body.
//!
//! One producer (the actor), one consumer (the body), frames as refcounted
//! `Bytes`. It replaces `tokio::sync::mpsc`, whose channel allocates a
//! 32-slot block (~1.5 KiB with its header) up front for every stream; an
//! idle stream here holds one small allocation and no frame storage until a
//! frame is queued.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// The consumer is `capacity` frames behind.
    #[error("the stream's queue is full")]
    Full,
    /// The consumer (the HTTP body) is gone, or the stream was cut off.
    #[error("the stream is closed")]
    Closed,
}

struct State {
    frames: VecDeque<Bytes>,
    /// The body waiting for a frame.
    waker: Option<Waker>,
    /// Live `FrameSender`s (a join that is retried holds a clone).
    senders: usize,
    receiver_gone: bool,
    /// Cut off by the actor: nothing more is queued, the body ends.
    cut: bool,
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is never held across anything that can panic, but a
        // poisoned queue is still a valid queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A queue holding at most `capacity` frames (at least one).
pub fn channel(capacity: usize) -> (FrameSender, FrameReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            frames: VecDeque::new(),
            waker: None,
            senders: 1,
            receiver_gone: false,
            cut: false,
        }),
        capacity: capacity.max(1),
    });
    (FrameSender(shared.clone()), FrameReceiver(shared))
}

/// The actor's end. Dropping the last clone ends the stream once the queued
/// frames are read.
pub struct FrameSender(Arc<Shared>);

impl Clone for FrameSender {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Self(self.0.clone())
    }
}

impl FrameSender {
    /// Queues a frame without waiting.
    pub fn offer(&self, frame: Bytes) -> Result<(), OfferError> {
        let waker = {
            let mut state = self.0.lock();
            if state.receiver_gone || state.cut {
                return Err(OfferError::Closed);
            }
            if state.frames.len() >= self.0.capacity {
                return Err(OfferError::Full);
            }
            state.frames.push_back(frame);
            state.waker.take()
        };
        // Woken outside the lock: the body may run on another thread.
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl FrameSender {
    /// Whether the body has read everything and waits for the next frame:
    /// ending the stream now ends it cleanly for a client that reads.
    pub fn is_caught_up(&self) -> bool {
        let state = self.0.lock();
        state.frames.is_empty() && state.waker.is_some()
    }

    /// Cuts the stream off: the queued frames are freed at once (a body that
    /// is never polled again keeps none of them) and the body, whenever it
    /// is polled, ends (the connection's cut-off ends the stream itself).
    pub fn cut_off(&self) {
        let waker = {
            let mut state = self.0.lock();
            state.cut = true;
            state.frames = VecDeque::new();
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for FrameSender {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.lock();
            state.senders -= 1;
            if state.senders > 0 {
                return;
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The HTTP body's end.
pub struct FrameReceiver(Arc<Shared>);

impl FrameReceiver {
    /// The next frame; `None` once the sender is gone and the queue is
    /// empty, or once the stream was cut off.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut state = self.0.lock();
        if state.cut {
            return Poll::Ready(None);
        }
        if let Some(frame) = state.frames.pop_front() {
            if state.frames.is_empty() && state.frames.capacity() > self.0.capacity.min(8) {
                // A burst grew the queue; give the memory back while idle.
                state.frames = VecDeque::new();
            }
            return Poll::Ready(Some(frame));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for FrameReceiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        state.frames.clear();
        state.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(rx: &mut FrameReceiver, waker: &Arc<CountingWaker>) -> Poll<Option<Bytes>> {
        let waker = Waker::from(waker.clone());
        rx.poll_recv(&mut Context::from_waker(&waker))
    }

    #[test]
    fn frames_arrive_in_order_up_to_capacity() {
        let (tx, mut rx) = channel(2);
        let waker = Arc::new(CountingWaker(AtomicUsize::new(0)));
        assert_eq!(tx.offer(Bytes::from_static(b"a")), Ok(()));
        assert_eq!(tx.offer(Bytes::from_static(b"b")), Ok(()));
        assert_eq!(tx.offer(Bytes::from_static(b"c")), Err(OfferError::Full));
        assert_eq!(
            poll(&mut rx, &waker),
            Poll::Ready(Some(Bytes::from_static(b"a")))
        );
        assert_eq!(tx.offer(Bytes::from_static(b"d")), Ok(()));
        assert_eq!(
            poll(&mut rx, &waker),
            Poll::Ready(Some(Bytes::from_static(b"b")))
        );
        assert_eq!(
            poll(&mut rx, &waker),
            Poll::Ready(Some(Bytes::from_static(b"d")))
        );
        assert_eq!(poll(&mut rx, &waker), Poll::Pending);
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_a_frame_and_by_the_end() {
        let (tx, mut rx) = channel(4);
        let waker = Arc::new(CountingWaker(AtomicUsize::new(0)));
        assert_eq!(poll(&mut rx, &waker), Poll::Pending);
        tx.offer(Bytes::from_static(b"x")).unwrap();
        assert_eq!(waker.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            poll(&mut rx, &waker),
            Poll::Ready(Some(Bytes::from_static(b"x")))
        );
        assert_eq!(poll(&mut rx, &waker), Poll::Pending);
        tx.offer(Bytes::from_static(b"y")).unwrap();
        drop(tx);
        assert_eq!(waker.0.load(Ordering::SeqCst), 2);
        // Queued frames are still read after the sender is gone.
        assert_eq!(
            poll(&mut rx, &waker),
            Poll::Ready(Some(Bytes::from_static(b"y")))
        );
        assert_eq!(poll(&mut rx, &waker), Poll::Ready(None));
    }

    #[test]
    fn the_stream_ends_with_the_last_sender() {
        let (tx, mut rx) = channel(4);
        let waker = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let retry = tx.clone();
        drop(retry);
        assert_eq!(poll(&mut rx, &waker), Poll::Pending);
        drop(tx);
        assert_eq!(poll(&mut rx, &waker), Poll::Ready(None));
    }

    #[test]
    fn a_gone_receiver_closes_the_sender() {
        let (tx, rx) = channel(4);
        assert_eq!(tx.offer(Bytes::from_static(b"y")), Ok(()));
        drop(rx);
        assert_eq!(tx.offer(Bytes::from_static(b"z")), Err(OfferError::Closed));
    }

    #[test]
    fn a_cut_off_frees_the_queued_frames_and_ends_the_body() {
        let (tx, mut rx) = channel(4);
        let waker = Arc::new(CountingWaker(AtomicUsize::new(0)));
        assert_eq!(poll(&mut rx, &waker), Poll::Pending);
        assert!(tx.is_caught_up());
        tx.offer(Bytes::from_static(b"a")).unwrap();
        tx.offer(Bytes::from_static(b"b")).unwrap();
        assert!(!tx.is_caught_up());
        tx.cut_off();
        assert_eq!(rx.0.lock().frames.capacity(), 0);
        assert_eq!(tx.offer(Bytes::from_static(b"c")), Err(OfferError::Closed));
        assert_eq!(poll(&mut rx, &waker), Poll::Ready(None));
    }

    #[test]
    fn a_burst_gives_its_memory_back_once_drained() {
        let (tx, mut rx) = channel(32);
        let waker = Arc::new(CountingWaker(AtomicUsize::new(0)));
        for _ in 0..32 {
            tx.offer(Bytes::from_static(b"f")).unwrap();
        }
        for _ in 0..32 {
            assert!(matches!(poll(&mut rx, &waker), Poll::Ready(Some(_))));
        }
        assert_eq!(rx.0.lock().frames.capacity(), 0);
    }
}
