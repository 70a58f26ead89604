//! The dashboard and GraphiQL: static files embedded in the binary (`api/dashboard/`), served
//! at `/` and under `/dashboard/`, gzip-compressed when the browser accepts it, with an ETag
//! and caching headers. Nothing is fetched from another host: the browser libraries are
//! vendored (`api/dashboard/VENDOR.md` lists versions, licences and checksums), so the
//! dashboard and GraphiQL work offline. No Node runs at build or run time.
//!
//! The dashboard is just another API client: the pages hold no data, every figure comes from
//! the GraphQL API with the bearer token the person signs in with, so it shows what that token
//! may see and nothing else. Serving the files needs no token.
//!
//! Why not a crate: `memory-serve` (brotli at build time, ETags, content negotiation) and
//! `rust-embed` were considered. memory-serve compresses in a build script that debug and test
//! builds run unoptimised (slow on GraphiQL's megabyte) and, like rust-embed, reads the files
//! from disk in debug builds unless told otherwise; rust-embed does not negotiate encodings.
//! What this needs is a fixed list of files, `include_bytes!`, one gzip per file (flate2, in
//! the tree already) and three headers, which is this module.
//!
//! Caching: vendored files carry their version in their name and are `immutable` for a year;
//! the dashboard's own files are `no-cache` (revalidated by ETag), so a new binary's pages are
//! picked up at once.

use std::io::Write;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The URL prefix of the assets.
pub const PREFIX: &str = "/dashboard";

/// The Content-Security-Policy of the pages: scripts, styles and connections of this origin
/// only (GraphiQL and uPlot set inline styles; GraphiQL's fonts are data URLs). `connect-src
/// 'self'` takes this origin's WebSockets too (CSP 3); `ws: wss:` allowed every host's, a way
/// out for what an injected script read (dash58 L6).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// One embedded file.
struct File {
    /// Its path under [`PREFIX`] (`app.js`, `vendor/…`).
    path: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! file {
    ($path:literal, $mime:expr) => {
        File {
            path: $path,
            mime: $mime,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboard/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// Every file served. A file not listed here is not served.
const FILES: &[File] = &[
    file!("index.html", HTML),
    file!("graphiql.html", HTML),
    file!("app.js", JS),
    file!("api.js", JS),
    file!("dag.js", JS),
    file!("views.js", JS),
    file!("overview.js", JS),
    file!("graphiql.js", JS),
    file!("app.css", CSS),
    file!("vendor/htm-preact-3.1.1.mjs", JS),
    file!("vendor/dagre-3.1.3.mjs", JS),
    file!("vendor/uplot-1.6.32.min.js", JS),
    file!("vendor/uplot-1.6.32.min.css", CSS),
    file!("vendor/graphiql-3.9.0.min.js", JS),
    file!("vendor/graphiql-3.9.0.css", CSS),
    file!("vendor/react-18.3.1.min.js", JS),
    file!("vendor/react-dom-18.3.1.min.js", JS),
    file!("vendor/graphql-ws-6.4.2.min.js", JS),
];

/// A file ready to serve: its gzip form and its ETag, computed once per process.
struct Prepared {
    gzip: Vec<u8>,
    etag: HeaderValue,
}

fn prepared() -> &'static [Prepared] {
    static PREPARED: OnceLock<Vec<Prepared>> = OnceLock::new();
    PREPARED.get_or_init(|| FILES.iter().map(prepare).collect())
}

fn prepare(file: &File) -> Prepared {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail; an empty result means "serve uncompressed".
    let gzip: Vec<u8> =
        encoder.write_all(file.body).and_then(|()| encoder.finish()).unwrap_or_default();
    let etag = HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(file.body)))
        .unwrap_or(HeaderValue::from_static("\"0\""));
    Prepared { gzip, etag }
}

/// FNV-1a, 64 bits: a stable content hash for ETags (not a security property).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The bytes of the dashboard's own JavaScript, compressed (what the size budget counts).
pub fn dashboard_js_gzip_bytes() -> usize {
    FILES
        .iter()
        .zip(prepared())
        .filter(|(f, _)| f.mime == JS && !is_graphiql(f.path))
        .map(|(_, p)| p.gzip.len())
        .sum()
}

fn is_graphiql(path: &str) -> bool {
    path.starts_with("graphiql")
        || ["graphiql-", "react-", "graphql-ws-"]
            .iter()
            .any(|p| path.starts_with(&format!("vendor/{p}")))
}

/// `GET /`: the dashboard's page.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /graphql` in a browser: GraphiQL.
pub async fn graphiql(headers: HeaderMap) -> Response {
    serve("graphiql.html", &headers)
}

/// `GET /dashboard/{*path}`.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(at) = FILES.iter().position(|f| f.path == path) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    let (file, prepared) = (&FILES[at], &prepared()[at]);
    let cache = if path.starts_with("vendor/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = if headers.get(header::IF_NONE_MATCH).is_some_and(|v| {
        v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii() == prepared.etag.as_bytes())
    }) {
        StatusCode::NOT_MODIFIED.into_response()
    } else if accepts_gzip(headers) && !prepared.gzip.is_empty() {
        let mut r = prepared.gzip.clone().into_response();
        r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        file.body.into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(file.mime));
    h.insert(header::ETAG, prepared.etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if file.mime == HTML {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    response
}

/// Whether `Accept-Encoding` admits gzip (`q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value.split(',').any(|part| {
        let mut pieces = part.split(';').map(str::trim);
        let coding = pieces.next().unwrap_or("");
        let refused = pieces.any(|p| p.replace(' ', "").eq_ignore_ascii_case("q=0"));
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_listed_once_and_typed_by_its_extension() {
        for (i, f) in FILES.iter().enumerate() {
            assert!(FILES[..i].iter().all(|g| g.path != f.path), "{} twice", f.path);
            let want = match f.path.rsplit('.').next() {
                Some("js" | "mjs") => JS,
                Some("css") => CSS,
                Some("html") => HTML,
                other => panic!("{}: unexpected extension {other:?}", f.path),
            };
            assert_eq!(f.mime, want, "{}", f.path);
            assert!(!f.body.is_empty(), "{} is empty", f.path);
        }
    }

    #[test]
    fn gzip_is_negotiated() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
            m
        };
        assert!(accepts_gzip(&h("gzip, deflate, br")));
        assert!(accepts_gzip(&h("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("br")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
