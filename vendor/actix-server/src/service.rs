use core::future::{ready, Ready};
use std::{
    future::Future,
    marker::PhantomData,
    net::SocketAddr,
    task::{Context, Poll},
};

use actix_service::{Service, ServiceFactory as BaseServiceFactory};
use futures_core::future::LocalBoxFuture;
use futures_util::future::FutureExt as _;
use tracing::error;

use crate::{
    socket::{FromStream, MioStream},
    worker::WorkerCounterGuard,
};

#[doc(hidden)]
pub trait ServerServiceFactory<Stream: FromStream>: Send + Clone + 'static {
    type Factory: BaseServiceFactory<Stream, Config = ()>;

    fn create(&self) -> Self::Factory;
}

pub(crate) trait InternalServiceFactory: Send {
    fn name(&self, token: usize) -> &str;

    fn clone_factory(&self) -> Box<dyn InternalServiceFactory>;

    fn create(&self) -> LocalBoxFuture<'static, Result<(usize, BoxedServerService), ()>>;
}

pub(crate) type BoxedServerService = Box<
    dyn Service<
        (WorkerCounterGuard, MioStream),
        Response = (),
        Error = (),
        Future = Ready<Result<(), ()>>,
    >,
>;

pub(crate) struct StreamService<S, I> {
    service: S,
    _phantom: PhantomData<I>,
}

impl<S, I> StreamService<S, I> {
    pub(crate) fn new(service: S) -> Self {
        StreamService {
            service,
            _phantom: PhantomData,
        }
    }
}

impl<S, I> Service<(WorkerCounterGuard, MioStream)> for StreamService<S, I>
where
    S: Service<I>,
    S::Future: 'static,
    S::Error: 'static,
    I: FromStream,
{
    type Response = ();
    type Error = ();
    type Future = Ready<Result<(), ()>>;

    fn poll_ready(&self, ctx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(ctx).map_err(|_| ())
    }

    fn call(&self, (guard, req): (WorkerCounterGuard, MioStream)) -> Self::Future {
        ready(match FromStream::from_mio(req) {
            Ok(stream) => {
                let f = self.service.call(stream);
                actix_rt::spawn(serve_connection(f, guard));
                Ok(())
            }
            Err(err) => {
                error!("Can not convert to an async TCP stream: {err}");
                Err(())
            }
        })
    }
}

/// The connection's future, then `guard` is dropped (the worker counts the connection until
/// then).
///
/// campusbite patch: `async move { let _ = f.await; drop(guard); }` stored the connection's
/// future twice in the spawned task, once as the captured `f` and once as the awaited value,
/// for the connection's whole life (an actix-web HTTP/1 connection's task: 2,632 B where the
/// future is 1,304 B). `Map` holds it once.
fn serve_connection<F: Future, G>(f: F, guard: G) -> impl Future<Output = ()> {
    f.map(move |_| drop(guard))
}

pub(crate) struct StreamNewService<F: ServerServiceFactory<Io>, Io: FromStream> {
    name: String,
    inner: F,
    token: usize,
    addr: SocketAddr,
    _t: PhantomData<Io>,
}

impl<F, Io> StreamNewService<F, Io>
where
    F: ServerServiceFactory<Io>,
    Io: FromStream + Send + 'static,
{
    pub(crate) fn create(
        name: String,
        token: usize,
        inner: F,
        addr: SocketAddr,
    ) -> Box<dyn InternalServiceFactory> {
        Box::new(Self {
            name,
            token,
            inner,
            addr,
            _t: PhantomData,
        })
    }
}

impl<F, Io> InternalServiceFactory for StreamNewService<F, Io>
where
    F: ServerServiceFactory<Io>,
    Io: FromStream + Send + 'static,
{
    fn name(&self, _: usize) -> &str {
        &self.name
    }

    fn clone_factory(&self) -> Box<dyn InternalServiceFactory> {
        Box::new(Self {
            name: self.name.clone(),
            inner: self.inner.clone(),
            token: self.token,
            addr: self.addr,
            _t: PhantomData,
        })
    }

    fn create(&self) -> LocalBoxFuture<'static, Result<(usize, BoxedServerService), ()>> {
        let token = self.token;
        let fut = self.inner.create().new_service(());
        Box::pin(async move {
            match fut.await {
                Ok(inner) => {
                    let service = Box::new(StreamService::new(inner)) as _;
                    Ok((token, service))
                }
                Err(_) => Err(()),
            }
        })
    }
}

impl<F, T, I> ServerServiceFactory<I> for F
where
    F: Fn() -> T + Send + Clone + 'static,
    T: BaseServiceFactory<I, Config = ()>,
    I: FromStream,
{
    type Factory = T;

    fn create(&self) -> T {
        (self)()
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of_val;

    use super::*;

    // campusbite patch: the spawned task holds the connection's future once.
    #[test]
    fn serve_connection_holds_the_future_once() {
        let f = core::future::ready([7u8; 1024]);
        let future_size = size_of_val(&f);
        let task = serve_connection(f, ());
        assert!(size_of_val(&task) <= future_size + 16, "{}", size_of_val(&task));
    }

    #[actix_rt::test]
    async fn serve_connection_runs_the_future_then_drops_the_guard() {
        struct Guard(std::rc::Rc<std::cell::Cell<bool>>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let dropped = std::rc::Rc::new(std::cell::Cell::new(false));
        let ran = std::rc::Rc::new(std::cell::Cell::new(false));
        let (d, r) = (dropped.clone(), ran.clone());
        serve_connection(
            async move {
                assert!(!d.get(), "guard dropped before the connection ended");
                r.set(true);
            },
            Guard(dropped.clone()),
        )
        .await;
        assert!(ran.get() && dropped.get());
    }
}
