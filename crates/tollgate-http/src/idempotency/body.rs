//! [`RequestBody`]: what the inner service of the idempotency layer reads.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// An error of a passed-through body, kept as its source (tower's boxed error).
pub use tower::BoxError;

/// The request body the layer's inner service receives: the bytes the layer read and
/// fingerprinted (a request it makes idempotent), or the caller's body untouched and unread (a
/// request it passes through: nothing is buffered, however large).
pub struct RequestBody {
    kind: Kind,
}

enum Kind {
    Read(Full<Bytes>),
    Passed(UnsyncBoxBody<Bytes, BoxError>),
}

impl RequestBody {
    /// A body the layer read.
    pub fn read(bytes: Bytes) -> Self {
        RequestBody {
            kind: Kind::Read(Full::new(bytes)),
        }
    }

    /// `body` as it comes, for a request the layer passes through.
    pub fn passed<B>(body: B) -> Self
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let body = body
            .map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
            .map_err(Into::into)
            .boxed_unsync();
        RequestBody {
            kind: Kind::Passed(body),
        }
    }

    /// Whether the layer read this body (an idempotent request) rather than passing it on.
    pub fn was_read(&self) -> bool {
        matches!(self.kind, Kind::Read(_))
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("read", &self.was_read())
            .finish_non_exhaustive()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Read(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Kind::Passed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Read(full) => full.is_end_stream(),
            Kind::Passed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Read(full) => full.size_hint(),
            Kind::Passed(body) => body.size_hint(),
        }
    }
}
