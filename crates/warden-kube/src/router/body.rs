//! The router's response body: the backend's, streamed frame by frame, or one of the router's
//! own JSON answers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A response body of `warden router`.
#[derive(Debug)]
pub struct RouterBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// The backend's body; `first` is its first frame when it was read together with the
    /// head (so that both leave in one write).
    Backend {
        first: Option<Frame<Bytes>>,
        rest: Incoming,
    },
    Local(Option<Bytes>),
}

impl RouterBody {
    /// The backend's body, as it comes.
    pub fn backend(first: Option<Frame<Bytes>>, rest: Incoming) -> RouterBody {
        RouterBody {
            kind: Kind::Backend { first, rest },
        }
    }

    /// A body of the router's own.
    pub fn local(bytes: impl Into<Bytes>) -> RouterBody {
        let bytes = bytes.into();
        RouterBody {
            kind: Kind::Local((!bytes.is_empty()).then_some(bytes)),
        }
    }

    pub fn empty() -> RouterBody {
        RouterBody {
            kind: Kind::Local(None),
        }
    }
}

impl Body for RouterBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Backend { first, rest } => match first.take() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => Pin::new(rest).poll_frame(cx),
            },
            Kind::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Backend { first, rest } => first.is_none() && rest.is_end_stream(),
            Kind::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Backend { first, rest } => {
                let rest = rest.size_hint();
                let extra = first
                    .as_ref()
                    .and_then(Frame::data_ref)
                    .map_or(0, |d| d.len() as u64);
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + extra);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
            Kind::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
