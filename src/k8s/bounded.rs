//! The Kubernetes client with bounded response bodies: whatever the API server (or anything at its address)
//! sends, reading an answer costs at most [`MAX_OBJECT_BYTES`].
//!
//! kube's client reads a whole answer before decoding it (`request_text` in kube-client's `client/mod.rs`), and
//! a watch's events line by line with an unbounded `LinesCodec` (`request_events`): an answer without end would
//! grow the process until the kernel ends it. [`Bounded`] wraps the client's HTTP service and fails a body once
//! it passed the bound:
//!
//! - a watch (`watch=true`/`watch=1`): each event, the bytes between two newlines;
//! - a container log (`…/log`): nothing here – the pod-log source reads it in chunks into its line buffer,
//!   which bounds a line by `--max-line-bytes`;
//! - any other answer: the whole body.
//!
//! The bound is far above any object: etcd stores at most 1.5 MiB per object by default (`--max-request-bytes`,
//! `DefaultMaxRequestBytes` in go.etcd.io/etcd `server/embed/config.go`), and the API server refuses larger
//! writes.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Request, Response, Uri};
use tower::Service;

/// The most one answer (or one watch event) of the API server may hold.
pub const MAX_OBJECT_BYTES: usize = 16 << 20;

type BoxError = Box<dyn StdError + Send + Sync>;

/// A client from the in-cluster configuration or the kubeconfig (as `kube::Client::try_default`), its answers
/// bounded.
pub async fn client() -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer().await.map_err(kube::Error::InferConfig)?;
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&tower::layer::layer_fn(Bounded::new)).build())
}

/// How much of an answer may be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// The whole body.
    Whole(usize),
    /// Each line.
    Line(usize),
    /// No bound here (the reader bounds it).
    Reader,
}

impl Limit {
    fn of(uri: &Uri) -> Limit {
        let query = uri.query().unwrap_or("");
        if query.split('&').any(|p| p == "watch=true" || p == "watch=1") {
            Limit::Line(MAX_OBJECT_BYTES)
        } else if uri.path().ends_with("/log") {
            Limit::Reader
        } else {
            Limit::Whole(MAX_OBJECT_BYTES)
        }
    }
}

/// An HTTP service whose answers' bodies are bounded.
#[derive(Debug, Clone)]
pub struct Bounded<S> {
    inner: S,
}

impl<S> Bounded<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Bounded { inner }
    }
}

impl<S, B, Req> Service<Request<Req>> for Bounded<S>
where
    S: Service<Request<Req>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<BoundedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Req>) -> Self::Future {
        let limit = Limit::of(req.uri());
        let answer = self.inner.call(req);
        Box::pin(async move { Ok(answer.await?.map(|body| BoundedBody { body, limit, seen: 0 })) })
    }
}

/// A body that fails once it passed its bound.
#[derive(Debug)]
pub struct BoundedBody<B> {
    body: B,
    limit: Limit,
    /// Bytes counted against the bound so far.
    seen: usize,
}

/// An answer passed [`MAX_OBJECT_BYTES`].
#[derive(Debug)]
pub struct TooLarge {
    limit: Limit,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if matches!(self.limit, Limit::Line(_)) { "a watch event" } else { "an answer" };
        write!(f, "{what} of the API server is larger than {} MiB; not read further", MAX_OBJECT_BYTES >> 20)
    }
}

impl StdError for TooLarge {}

impl<B> Body for BoundedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let (seen, max) = match self.limit {
                Limit::Whole(max) => (self.seen + data.len(), max),
                Limit::Line(max) => match memchr::memrchr(b'\n', data) {
                    Some(i) => (data.len() - i - 1, max),
                    None => (self.seen + data.len(), max),
                },
                Limit::Reader => (0, usize::MAX),
            };
            if seen > max {
                return Poll::Ready(Some(Err(Box::new(TooLarge { limit: self.limit }))));
            }
            self.seen = seen;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    //! The client against `tower_test` mocks that answer without end: each read must fail at the bound (so
    //! the tests end), and answers within it pass unchanged.

    use futures::StreamExt;
    use futures::stream::BoxStream;
    use http_body_util::StreamBody;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, WatchEvent, WatchParams};
    use kube::client::Body as KubeBody;

    use super::*;

    /// What the mock answers with: any stream of chunks.
    type Chunks = StreamBody<BoxStream<'static, Result<Frame<Bytes>, std::convert::Infallible>>>;
    type Handle = tower_test::mock::Handle<Request<KubeBody>, Response<Chunks>>;

    fn client() -> (kube::Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<KubeBody>, Response<Chunks>>();
        (kube::Client::new(Bounded::new(service), "ns"), handle)
    }

    /// A body of `first`, then `chunk` repeated without end.
    fn endless(first: &'static [u8], chunk: &'static [u8]) -> Chunks {
        let chunks = futures::stream::iter([Bytes::from_static(first)])
            .chain(futures::stream::repeat(Bytes::from_static(chunk)));
        StreamBody::new(chunks.map(|b| Ok(Frame::data(b))).boxed())
    }

    /// A body of `bytes`.
    fn whole(bytes: &'static [u8]) -> Chunks {
        StreamBody::new(futures::stream::iter([Ok(Frame::data(Bytes::from_static(bytes)))]).boxed())
    }

    fn answer(body: Chunks) -> Response<Chunks> {
        Response::builder().header("content-type", "application/json").body(body).unwrap()
    }

    static MEGABYTE: [u8; 1 << 20] = [b' '; 1 << 20];

    #[tokio::test]
    async fn an_answer_without_end_fails_at_the_bound() {
        let (client, mut handle) = client();
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("a GET");
            send.send_response(answer(endless(b"{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"x\":\"", &MEGABYTE)));
            let (_, send) = handle.next_request().await.expect("a second GET");
            let pod = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#;
            send.send_response(answer(whole(pod)));
        });
        let pods: Api<Pod> = Api::namespaced(client, "ns");
        let err = pods.get("p").await.unwrap_err();
        assert!(crate::sink::error_chain(&err).contains("larger than 16 MiB"), "{err:?}");
        assert_eq!(pods.get("p").await.unwrap().metadata.name.as_deref(), Some("p"));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_watch_event_without_end_fails_at_the_bound_and_long_streams_of_small_events_pass() {
        let (client, mut handle) = client();
        let event = b"{\"type\":\"BOOKMARK\",\"object\":{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"resourceVersion\":\"2\"}}}\n";
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("a watch");
            assert!(req.uri().query().unwrap().contains("watch=true"), "{}", req.uri());
            // 20 MiB of small events in all (more than one answer may hold), then one that never ends.
            let many: Vec<u8> = event.repeat((20 << 20) / event.len());
            let many: &'static [u8] = Box::leak(many.into_boxed_slice());
            send.send_response(answer(endless(many, &MEGABYTE)));
        });
        let pods: Api<Pod> = Api::namespaced(client, "ns");
        let mut events = pods.watch(&WatchParams::default(), "1").await.unwrap().boxed();
        let mut bookmarks = 0;
        let failed = loop {
            match events.next().await {
                Some(Ok(WatchEvent::Bookmark(_))) => bookmarks += 1,
                Some(Ok(other)) => panic!("{other:?}"),
                Some(Err(e)) => break e,
                None => panic!("the watch ended"),
            }
        };
        assert_eq!(bookmarks, (20 << 20) / event.len());
        assert!(crate::sink::error_chain(&failed).contains("larger than 16 MiB"), "{failed:?}");
        server.await.unwrap();
    }
}
