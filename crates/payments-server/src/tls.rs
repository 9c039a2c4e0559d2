//! TLS to PostgreSQL as libpq does it: `sslmode` and `sslrootcert` in `DATABASE_URL`, with
//! rustls. And the root certificates a `rediss://` connection trusts (`REDIS_CA_FILE`).
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | – |
//! | `prefer` (the default) | when the server offers it | no (as libpq, unless `sslrootcert` is given) |
//! | `require` | always | no (as libpq, unless `sslrootcert` is given: then as `verify-ca`) |
//! | `verify-ca` | always | signed by a trusted CA |
//! | `verify-full` | always | signed by a trusted CA and issued for the host connected to |
//!
//! The trusted CAs are `sslrootcert`'s (a PEM file), or the system's when it is absent or
//! `system`.

use std::path::Path;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The connector of [`http_client`]: `http`, or `https` with rustls.
pub(crate) type HttpsConnector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// A pooled HTTP/1.1 client for `http` and `https` URLs (rustls on ring, trusting `roots`),
/// connecting within `connect_timeout`: the processor's and the trace exporter's.
pub(crate) fn http_client(
    roots: RootCertStore,
    connect_timeout: std::time::Duration,
) -> Result<
    hyper_util::client::legacy::Client<HttpsConnector, http_body_util::Full<bytes::Bytes>>,
    rustls::Error,
> {
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    // The URL's scheme decides: the TLS connector passes http through.
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build(connector),
    )
}

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                ));
            }
        })
    }

    /// What tokio-postgres negotiates; the certificate checks are the TLS connector's.
    pub(crate) fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// A `DATABASE_URL` with its TLS settings taken out (tokio-postgres knows only some of them).
#[derive(Debug, PartialEq)]
pub(crate) struct PgUrl {
    /// The URL (or `key=value` string) without `sslmode` and `sslrootcert`.
    pub(crate) rest: String,
    pub(crate) mode: SslMode,
    pub(crate) root_cert: Option<String>,
}

impl PgUrl {
    /// Splits `url`, in either of libpq's forms.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let mut mode = SslMode::Prefer;
        let mut root_cert = None;
        let mut take = |key: &str, value: &str| -> Result<bool, String> {
            match key {
                "sslmode" => mode = SslMode::parse(value)?,
                "sslrootcert" => root_cert = Some(value.to_owned()),
                _ => return Ok(false),
            }
            Ok(true)
        };
        let rest = if url.contains("://") {
            let (base, query) = url.split_once('?').unwrap_or((url, ""));
            let mut kept = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                if !take(key, &percent_decode_str(value).decode_utf8_lossy())? {
                    kept.push(pair);
                }
            }
            if kept.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        } else {
            let mut kept = Vec::new();
            for pair in url.split_whitespace() {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                if !take(key.trim(), value.trim_matches('\''))? {
                    kept.push(pair);
                }
            }
            kept.join(" ")
        };
        Ok(PgUrl {
            rest,
            mode,
            root_cert,
        })
    }

    /// The rustls configuration this `sslmode` asks for.
    pub(crate) fn client_config(&self) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let checks = match (self.mode, &self.root_cert) {
            (SslMode::Disable | SslMode::Prefer | SslMode::Require, None) => Checks::None,
            (SslMode::VerifyFull, _) => Checks::Full,
            _ => Checks::ChainOnly,
        };
        let config = match checks {
            Checks::None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
                .with_no_client_auth(),
            Checks::Full => builder
                .with_root_certificates(roots(self.root_cert.as_deref())?)
                .with_no_client_auth(),
            Checks::ChainOnly => {
                let roots = Arc::new(roots(self.root_cert.as_deref())?);
                let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| format!("sslrootcert: {e}"))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyHostName(verifier)))
                    .with_no_client_auth()
            }
        };
        Ok(config)
    }
}

enum Checks {
    None,
    ChainOnly,
    Full,
}

/// The trusted CAs: the PEM file at `path`, or the system's for `None` and `"system"`.
pub(crate) fn roots(path: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match path {
        None | Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no system CA certificates found; set sslrootcert".into());
            }
        }
        Some(path) => return roots_in_file(Path::new(path)),
    }
    Ok(store)
}

/// The CAs in the PEM file at `path`, as a root store; errors start with the path.
pub(crate) fn roots_in_file(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in pem_certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The certificates in the PEM file at `path`; at least one.
pub(crate) fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    certificates_in(&pem, path)
}

/// The certificates in `pem`, the text of the file at `path`; at least one.
pub(crate) fn certificates_in(
    pem: &[u8],
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{shown}: no PEM certificate in the file"));
    }
    Ok(certs)
}

/// `verify-ca`: the chain must lead to a trusted CA; the host name is not checked.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name: a name error means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without `sslrootcert`: encrypted, the certificate taken as it comes
/// (what libpq does; `verify-full` is the mode that defeats a man in the middle). The
/// handshake's signatures are still checked.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> PgUrl {
        PgUrl::parse(url).expect(url)
    }

    #[test]
    fn tls_settings_come_out_of_either_form() {
        let url = split(
            "postgres://u@db:5432/pay?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        );
        assert_eq!(url.rest, "postgres://u@db:5432/pay?application_name=x");
        assert_eq!(url.mode, SslMode::VerifyFull);
        assert_eq!(url.root_cert.as_deref(), Some("/etc/ca.pem"));
        let url = split("host=db user=u sslmode=require sslrootcert='/ca.pem' dbname=pay");
        assert_eq!(url.rest, "host=db user=u dbname=pay");
        assert_eq!(url.mode, SslMode::Require);
        assert_eq!(url.root_cert.as_deref(), Some("/ca.pem"));
        let url = split("postgres://u@db/pay");
        assert_eq!(
            (url.rest.as_str(), url.mode),
            ("postgres://u@db/pay", SslMode::Prefer)
        );
        let bad = PgUrl::parse("postgres://db/pay?sslmode=maybe").expect_err("refused");
        assert!(bad.contains("sslmode=maybe"), "{bad}");
    }

    #[test]
    fn each_mode_builds_its_configuration() {
        for url in [
            "postgres://db/x?sslmode=disable",
            "postgres://db/x?sslmode=prefer",
            "postgres://db/x?sslmode=require",
        ] {
            assert!(split(url).client_config().is_ok(), "{url}");
        }
        let missing = split("postgres://db/x?sslmode=verify-full&sslrootcert=/nonexistent.pem");
        let error = missing.client_config().expect_err("no such file");
        assert!(error.contains("/nonexistent.pem"), "{error}");
    }
}
