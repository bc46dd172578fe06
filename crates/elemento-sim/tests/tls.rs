//! TLS to the Elemento API: an endpoint signed by a private CA is refused unless its CA is in the client's
//! configurable CA bundle (`api.caBundle`).

use std::sync::Arc;

use elemento_api::{ApiError, Auth, Client, ClientConfig, Endpoints};
use elemento_sim::scenario::{Scenario, VmSeed};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A private CA and a server certificate it signs for 127.0.0.1, made with openssl.
/// Returns (CA certificate, server certificate chain, server key), all PEM.
fn private_ca(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=Elemento test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=elemento-sim",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("ext.cnf"), "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    (read("ca.pem"), read("server.pem"), read("server.key"))
}

/// Serves the simulator's router over TLS on an ephemeral port.
async fn https_sim(cert: &[u8], key: &[u8]) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key).unwrap();
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let scenario = Scenario {
        vms: vec![VmSeed {
            name: "tls-vm".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut scenario = scenario;
    scenario.auth.require_login = false;
    let world = elemento_sim::world::World::from_scenario(scenario).unwrap();
    let app = elemento_sim::router(Arc::new(elemento_sim::Sim::new(world, None, None)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("https://{addr}")
}

#[tokio::test]
async fn a_private_ca_endpoint_needs_its_ca_in_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path());
    let url = https_sim(&cert, &key).await;
    let mut cfg = ClientConfig::new(Endpoints::single(&url).unwrap());
    cfg.auth = Auth::default();
    cfg.retry.max_attempts = 1;
    let untrusted = Client::new(cfg.clone())
        .unwrap()
        .list_vms()
        .await
        .unwrap_err();
    assert!(
        matches!(untrusted, ApiError::Unavailable { .. }),
        "{untrusted:?}"
    );
    assert!(
        untrusted.to_string().to_lowercase().contains("certificate"),
        "the error says why: {untrusted}"
    );
    cfg.ca_bundle_pem = Some(ca);
    let vms = Client::new(cfg.clone()).unwrap().list_vms().await.unwrap();
    assert_eq!(vms.len(), 1);
    cfg.ca_bundle_pem = Some(b"not a certificate".to_vec());
    assert!(
        matches!(Client::new(cfg), Err(ApiError::Config(_))),
        "a bad bundle is a configuration error"
    );
}
