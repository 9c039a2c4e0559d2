//! [`RequestHead`]: a request seen without its body.

use http::{Extensions, HeaderMap, Method, Request, Uri};

/// A request without its body: what the layers' extractors look at.
///
/// Extractors take a `RequestHead` rather than a `&Request<B>`, so a layer is not generic over
/// the request body: the same layer and extractor serve a hyper `Incoming` body, an axum `Body`
/// or a test's `Full<Bytes>`.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// The head of `request`.
    pub fn of<B>(request: &'a Request<B>) -> Self {
        RequestHead {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    /// The method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request target.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The extensions: what outer layers learnt (an authenticated user, a matched route, a
    /// client address).
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }
}
