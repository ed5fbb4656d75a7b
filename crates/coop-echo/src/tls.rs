//! TLS for `serve`, `client` and `bench`: rustls with its `ring` provider, through
//! futures-rustls over coop's `futures-io` traits.
//!
//! This file holds the settings (certificates, keys, whom a client trusts), why a
//! handshake failed in words, and what the server's handshake reads first. The server's
//! handshake and echo are in [`crate::tls_echo`]; the load generator drives rustls itself
//! (see `bench`).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

/// What `client --tls` and `bench --tls` say when given neither whom to trust nor
/// `--insecure`.
pub const NO_TRUST: &str =
    "--tls needs --tls-ca PEM (the certificate that signed the server's) or --insecure";

/// How long a client has, by default, from its connection to the end of its handshake.
pub const HANDSHAKE_TIME: Duration = Duration::from_secs(10);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's config: the certificate chain in `cert` (PEM, the server's own first)
/// and its private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1). Fails, with the sentence
/// to show, if a file cannot be read, holds no certificate or key, or the key is not the
/// certificate's.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certs(cert, "--tls-cert")?;
    let pem = read(key, "--tls-key")?;
    let key_file = key.display();
    // rustls reads no encrypted key (PKCS#8's ENCRYPTED PRIVATE KEY, or the older
    // Proc-Type header): say so, rather than that there is no key.
    if memchr::memmem::find(&pem, b"ENCRYPTED").is_some() {
        return Err(format!(
            "--tls-key {key_file}: the key is encrypted; decrypt it first \
             (openssl pkey -in {key_file} -out plain-key.pem)"
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("--tls-key {key_file}: no private key in it (a PEM 'PRIVATE KEY' block)")
        }
        e => format!("--tls-key {key_file}: {e}"),
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                "--tls-key is not the key of the certificate in --tls-cert".to_string()
            }
            rustls::Error::InvalidCertificate(_) => format!(
                "--tls-cert {}: the first certificate cannot be read (bad encoding)",
                cert.display()
            ),
            e => format!(
                "--tls-cert {} with --tls-key {key_file}: {e}",
                cert.display()
            ),
        })?;
    Ok(Arc::new(config))
}

/// The client's config: trust the certificates in `ca` (PEM), or, with `ca` `None`,
/// check nothing (`--insecure`: the handshake still proves that the server holds the
/// key of the certificate it sent, but not whose certificate that is).
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let config = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca, "--tls-ca")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(algorithms)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// What a client needs to speak TLS: whom to trust, and the name the server's certificate
/// must carry.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// rustls' settings, with the certificates trusted (or none checked).
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate must carry.
    pub name: ServerName<'static>,
}

impl ClientTls {
    /// Trusting the certificates in `ca` (none checked if `None`: see
    /// [`client_config`]), for a server at `target` (`HOST:PORT`) whose certificate
    /// carries `name`, or else that host.
    pub fn new(ca: Option<&Path>, name: Option<&str>, target: &str) -> Result<Self, String> {
        Ok(ClientTls {
            config: client_config(ca)?,
            name: server_name(name, target)?,
        })
    }
}

/// The name the server's certificate must carry: `name`, else the host the client
/// connects to (`HOST:PORT`, `[IPV6]:PORT`), as a DNS name or an IP address.
fn server_name(name: Option<&str>, target: &str) -> Result<ServerName<'static>, String> {
    let host = match name {
        Some(name) => {
            return ServerName::try_from(name.to_string())
                .map_err(|_| format!("--tls-name '{name}' is not a DNS name or an IP address"));
        }
        None => {
            let host = target.rsplit_once(':').map_or(target, |(host, _)| host);
            host.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host)
        }
    };
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("'{host}' is not a name a certificate can carry: give --tls-name"))
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))
}

fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, flag)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no certificate in it (a PEM 'CERTIFICATE' block)",
            path.display()
        ));
    }
    Ok(certs)
}

/// `--insecure`: any certificate will do, but its signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// What a plain client says of a server whose first reply is a TLS record.
pub const SPEAKS_TLS: &str = "the first reply is a TLS record: the server speaks TLS (give --tls)";

/// Whether `reply`, the first bytes a server sent a plain client, begin a TLS record: an
/// alert (21) or a handshake (22), then version 3.x. A TLS server answers plain bytes
/// with an alert, which is not text to show.
pub fn is_tls_record(reply: &[u8]) -> bool {
    matches!(reply, [21 | 22, 3, ..])
}

/// Why a client's handshake failed, in words for its one line of error.
pub fn client_failure(e: &io::Error) -> String {
    use rustls::{CertificateError, Error, InvalidMessage};
    let tls = e.get_ref().and_then(|e| e.downcast_ref::<Error>());
    match tls {
        Some(Error::InvalidMessage(InvalidMessage::InvalidContentType)) => {
            "the server does not speak TLS (is it run with --tls-cert?)".to_string()
        }
        // No issuer of that name among the trusted, or one of that name whose key did
        // not sign it.
        Some(Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => "the server's certificate is not signed by one in --tls-ca".to_string(),
        // webpki's reason, only in its text: a self-signed certificate made without
        // basicConstraints=CA:FALSE is a CA's, which no client takes as a server's.
        Some(Error::InvalidCertificate(CertificateError::Other(other)))
            if format!("{other:?}").contains("CaUsedAsEndEntity") =>
        {
            "the server's certificate is a CA certificate, which TLS clients refuse as a \
             server's: make it with basicConstraints=CA:FALSE, or sign it with a CA"
                .to_string()
        }
        Some(
            e @ Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ),
        ) => format!("{e} (give the name it carries with --tls-name)"),
        Some(e) => e.to_string(),
        None => e.to_string(),
    }
}

/// Why a handshake failed, in words for a log line.
pub(crate) fn handshake_failure(e: &io::Error) -> String {
    use rustls::{Error, InvalidMessage, PeerIncompatible};
    let tls = e.get_ref().and_then(|e| e.downcast_ref::<Error>());
    match (e.kind(), tls) {
        (_, Some(Error::InvalidMessage(InvalidMessage::InvalidContentType)))
        | (_, Some(Error::InvalidMessage(InvalidMessage::UnknownProtocolVersion))) => {
            "the client does not speak TLS (plain text?)".to_string()
        }
        (_, Some(Error::AlertReceived(alert))) => {
            format!("the client ended it with the alert {alert:?}")
        }
        // What a ClientHello of TLS 1.1 or older lacks.
        (
            _,
            Some(Error::PeerIncompatible(
                PeerIncompatible::SignatureAlgorithmsExtensionRequired
                | PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled,
            )),
        ) => {
            "the client offers only TLS older than 1.2 (this server speaks 1.2 and 1.3)".to_string()
        }
        (_, Some(Error::PeerIncompatible(why))) => {
            format!("nothing in common with the client: {why:?}")
        }
        (_, Some(e)) => e.to_string(),
        // EOF on a read, or EPIPE on a write of the server's flight.
        (io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe, None) => {
            "the client closed mid-handshake".to_string()
        }
        (io::ErrorKind::ConnectionReset, None) => {
            "the client reset the connection mid-handshake".to_string()
        }
        _ => e.to_string(),
    }
}

/// The TLS version a connection speaks, for its log line.
pub(crate) fn version_name(version: Option<rustls::ProtocolVersion>) -> &'static str {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
        _ => "TLS",
    }
}

/// A stream that first gives back bytes read already (what followed a PROXY header: the
/// start of the handshake), then reads the socket.
#[derive(Debug)]
pub(crate) struct Rewound<S> {
    first: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Rewound<S> {
    /// `inner`, with `first` in front of what it reads.
    pub fn new(first: Vec<u8>, inner: S) -> Self {
        Rewound {
            first,
            at: 0,
            inner,
        }
    }

    /// The stream under it.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.at < this.first.len() {
            let n = buf.len().min(this.first.len() - this.at);
            buf[..n].copy_from_slice(&this.first[this.at..this.at + n]);
            this.at += n;
            if this.at == this.first.len() {
                // Read once; the connection keeps no copy of it.
                this.first = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// Closes our side: TLS's close_notify, then the FIN. The client may have closed already.
pub(crate) async fn close<I: AsyncWrite + Unpin>(io: &mut I) -> io::Result<()> {
    match io.close().await {
        Err(e)
            if e.kind() != io::ErrorKind::NotConnected && e.kind() != io::ErrorKind::BrokenPipe =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

/// What a TLS server needs, shared by its connections (and its threads).
#[derive(Clone)]
pub struct Tls {
    /// The server's certificate and key, and rustls' settings.
    pub config: Arc<ServerConfig>,
    /// A client that has not finished its handshake by then is let go.
    pub handshake_time: Duration,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshake_time", &self.handshake_time)
            .finish_non_exhaustive()
    }
}
