//! A request body copied as it streams to the upstream, for a mirrored request
//! whose body was not in hand when the filters ran (an HTTP/2 or gRPC body, a
//! streamed HTTP/1.1 upload).
//!
//! The copy costs the real request nothing it would wait for: frames pass
//! through untouched, and the copy keeps a reference to each data chunk (no byte
//! is copied until the end) up to [`LIMIT`] bytes. When the body ends, the
//! copy goes to the mirror on a oneshot channel. A body longer than the limit,
//! one that fails, or one never read to its end (the real request failed before
//! sending it) gives the mirror nothing: dropping the sender tells it so.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use super::super::body::{BodyError, ReceivedBody};

/// The largest body copied for a mirror.
pub const LIMIT: usize = 64 * 1024;

pub struct Tee {
    inner: ReceivedBody,
    chunks: Vec<Bytes>,
    size: usize,
    /// `None` once the copy was sent or given up.
    to_mirror: Option<oneshot::Sender<Bytes>>,
}

impl Tee {
    /// Wraps `inner`; the receiver gets the whole body once it has streamed.
    pub fn new(inner: ReceivedBody) -> (Tee, oneshot::Receiver<Bytes>) {
        let (sender, receiver) = oneshot::channel();
        let tee = Tee {
            inner,
            chunks: Vec::new(),
            size: 0,
            to_mirror: Some(sender),
        };
        (tee, receiver)
    }

    fn keep(&mut self, data: &Bytes) {
        if self.to_mirror.is_none() {
            return;
        }
        self.size += data.len();
        if self.size > LIMIT {
            self.give_up();
            return;
        }
        self.chunks.push(data.clone());
    }

    fn finish(&mut self) {
        let Some(sender) = self.to_mirror.take() else {
            return;
        };
        let mut whole = BytesMut::with_capacity(self.size);
        for chunk in self.chunks.drain(..) {
            whole.extend_from_slice(&chunk);
        }
        let _ = sender.send(whole.freeze());
    }

    fn give_up(&mut self) {
        self.to_mirror = None;
        self.chunks = Vec::new();
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.keep(data);
                }
                // A sender may stop polling once the body says it ended.
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) => self.give_up(),
            Poll::Pending => {}
        }
        polled
    }

    pub fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    pub fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn the_mirror_gets_the_whole_body_once_it_streamed() {
        let (tee, copy) = Tee::new(ReceivedBody::Whole(Some(Bytes::from_static(b"hello"))));
        let mut body = ReceivedBody::Teed(Box::new(tee));
        let sent = (&mut body).collect().await.expect("body").to_bytes();
        assert_eq!(sent, "hello");
        assert_eq!(copy.await.expect("copy"), "hello");
    }

    #[tokio::test]
    async fn a_body_beyond_the_limit_is_not_copied_and_still_sent() {
        let big = Bytes::from(vec![7u8; LIMIT + 1]);
        let (tee, copy) = Tee::new(ReceivedBody::Whole(Some(big)));
        let mut body = ReceivedBody::Teed(Box::new(tee));
        let sent = (&mut body).collect().await.expect("body").to_bytes();
        assert_eq!(sent.len(), LIMIT + 1);
        assert!(copy.await.is_err());
    }

    #[tokio::test]
    async fn a_body_never_read_gives_the_mirror_nothing() {
        let (tee, copy) = Tee::new(ReceivedBody::Whole(Some(Bytes::from_static(b"x"))));
        drop(ReceivedBody::Teed(Box::new(tee)));
        assert!(copy.await.is_err());
    }
}
