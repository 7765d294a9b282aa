//! Trust onboarding: what a phone reaches before it trusts anything (over the plain
//! HTTP `onboarding_listen`, and over HTTPS too): a page that explains, per
//! platform, the one-time step of trusting this node's certificate authority, the CA
//! as `.crt` (DER, one certificate: what Android installs), `.pem` (the bundle: this
//! node's CA and its siblings', so failover to a sibling needs no second step) and
//! an iOS configuration profile of the same bundle, with the fingerprint to compare.
//! It also answers ACME HTTP-01 challenges (`crate::tls::acme`).
//!
//! The page has no script; the claim code of the label's link is carried to the
//! app's claim screen (`#/claim?code=…`), fragments never leave the phone.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use sha2::{Digest, Sha256};

use super::{Api, ApiError, ApiResult, Call};

const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// `GET /onboarding`: the page.
pub fn page(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let tls = api.tls()?;
    let claim = call
        .query("claim")
        .filter(|code| code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    let host = request_host(call.header(header::HOST))
        .unwrap_or_else(|| format!("{}.local", crate::discovery::rules::host_label(&api.node.name)));
    let port = match api.https_port {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let app_url = match &claim {
        Some(code) => format!("https://{host}{port}/#/claim?code={code}"),
        None => format!("https://{host}{port}/"),
    };
    let name = escape(&api.node.name);
    // Line breaks only between bytes, never inside one.
    let fingerprint = tls.ca().fingerprint().replace(':', ":<wbr>");
    let siblings = sibling_cas(api).len();
    let sibling_note = match siblings {
        0 => String::new(),
        1 => "<p>The download also holds the authority of this node's sibling, so if this box is ever down your phone opens its sibling without another step.</p>".to_owned(),
        n => format!("<p>The download also holds the authorities of this node's {n} siblings, so if this box is ever down your phone opens them without another step.</p>"),
    };
    let claim_note = if claim.is_some() {
        "<p>After this step you will set up the first (admin) account with the claim code from the label, already filled in.</p>"
    } else {
        ""
    };
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Trust {name}</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;margin:0 auto;max-width:40rem;padding:1rem;color:#1b1b1b;background:#fff}}
h1{{font-size:1.5rem}} h2{{font-size:1.1rem;margin-top:1.5rem}}
.fingerprint{{font-family:ui-monospace,monospace;font-size:.8rem;background:#f2f2f2;padding:.5rem;border-radius:.3rem}}
a.button{{display:inline-block;margin:.2rem 0 .4rem;padding:.6rem 1rem;border-radius:.4rem;background:#0b57d0;color:#fff;text-decoration:none}}
a.next{{background:#137333}} ol{{padding-left:1.3rem;margin:.3rem 0}} li{{margin:.3rem 0}} .note{{color:#444;font-size:.9rem}}
</style></head>
<body>
<h1>Welcome to {name}</h1>
<p>This box serves your photos from home. Your phone has to trust it once, so that it can open it securely, even with the internet down.
Trusting it lets your phone check that it talks to this box only: the authority can vouch for <strong>this box's names and addresses and nothing else</strong>.</p>
{claim_note}
<p>Fingerprint of the authority (the label and <code>edgenode status</code> show the same):</p>
<p class="fingerprint" id="fingerprint">{fingerprint}</p>
{sibling_note}
<h2>iPhone and iPad</h2>
<ol><li><a class="button" href="/ca.mobileconfig" id="download-ios">Download the profile</a><br>then tap Allow.</li>
<li>Open Settings, tap <em>Profile Downloaded</em>, then Install.</li>
<li>Settings, General, About, Certificate Trust Settings: turn on <em>Edgenode {name}</em>.</li></ol>
<h2>Android</h2>
<ol><li><a class="button" href="/ca.crt" id="download-android">Download the certificate</a></li>
<li>Settings, Security (or Security and privacy), More, Encryption and credentials, Install a certificate, <em>CA certificate</em>: pick the file you downloaded.</li></ol>
<h2>Computers</h2>
<ol><li><a class="button" href="/ca.pem" id="download-pem">Download the certificate (PEM)</a></li>
<li>Windows: open it, Install Certificate, <em>Trusted Root Certification Authorities</em>. macOS: open it in Keychain Access, set <em>Always Trust</em>. Linux: Chrome, Settings, Privacy and security, Security, Manage certificates, Authorities, Import; Firefox, Settings, Certificates, Import.</li></ol>
<h2>Then</h2>
<p><a class="button next" href="{app_url}" id="continue">Continue to {name}</a></p>
<p class="note">If your browser then warns that the connection is not private, the step above is not done yet on this device: go back and finish it. Never tap past that warning.</p>
</body></html>
"#
    );
    Ok(with_page_headers(Response::builder().header(header::CONTENT_TYPE, "text/html; charset=utf-8"), html.into()))
}

/// `GET /ca.crt`: this node's CA, DER.
pub fn ca_der(api: &Api, _call: &mut Call<'_>) -> ApiResult {
    let der = api.tls()?.ca().certificate_der.clone();
    Ok(download(
        "application/x-x509-ca-cert",
        &format!("{}-ca.crt", crate::discovery::rules::host_label(&api.node.name)),
        der.into(),
    ))
}

/// `GET /ca.pem`: this node's CA and its siblings', PEM.
pub fn ca_pem(api: &Api, _call: &mut Call<'_>) -> ApiResult {
    let mut bundle = api.tls()?.ca().certificate_pem.clone();
    for pem in sibling_cas(api) {
        if !bundle.ends_with('\n') {
            bundle.push('\n');
        }
        bundle.push_str(&pem);
    }
    Ok(download(
        "application/x-pem-file",
        &format!("{}-ca.pem", crate::discovery::rules::host_label(&api.node.name)),
        bundle.into(),
    ))
}

/// `GET /ca.mobileconfig`: an iOS/macOS configuration profile holding the bundle.
pub fn ca_mobileconfig(api: &Api, _call: &mut Call<'_>) -> ApiResult {
    let tls = api.tls()?;
    let mut certificates = vec![tls.ca().certificate_der.clone()];
    certificates.extend(sibling_cas(api).iter().filter_map(|pem| {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok().map(|der| der.to_vec())
    }));
    let name = escape(&api.node.name);
    let node_id = api.store.node_id().to_string();
    let payloads: String = certificates
        .iter()
        .enumerate()
        .map(|(index, der)| {
            format!(
                "<dict><key>PayloadType</key><string>com.apple.security.root</string>\
<key>PayloadVersion</key><integer>1</integer>\
<key>PayloadIdentifier</key><string>org.edgenode.{node_id}.ca.{index}</string>\
<key>PayloadUUID</key><string>{uuid}</string>\
<key>PayloadDisplayName</key><string>{display}</string>\
<key>PayloadContent</key><data>{data}</data></dict>",
                uuid = uuid_of(der),
                display = if index == 0 { format!("Edgenode {name}") } else { format!("Edgenode sibling {index}") },
                data = base64_standard(der),
            )
        })
        .collect();
    let profile = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>org.edgenode.{node_id}</string>
<key>PayloadUUID</key><string>{uuid}</string>
<key>PayloadDisplayName</key><string>Edgenode {name}</string>
<key>PayloadDescription</key><string>Lets this device open {name} and its siblings securely. The authority is limited to their own names and addresses.</string>
<key>PayloadContent</key><array>{payloads}</array>
</dict></plist>
"#,
        uuid = uuid_of(node_id.as_bytes()),
    );
    Ok(download(
        "application/x-apple-aspen-config",
        &format!("{}.mobileconfig", crate::discovery::rules::host_label(&api.node.name)),
        profile.into(),
    ))
}

/// `GET /.well-known/acme-challenge/{token}`: the key authorization ACME asked for.
pub fn acme_challenge(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let token = call.param(0).to_owned();
    let answer = api.tls()?.challenges().get(&token).ok_or_else(|| ApiError::not_found("challenge"))?;
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Bytes::from(answer))
        .expect("a valid response"))
}

impl Api {
    fn tls(&self) -> Result<&crate::tls::ServingCertificates, ApiError> {
        self.tls.as_deref().ok_or_else(|| ApiError::not_found("certificate authority"))
    }
}

/// The siblings' CAs (PEM) learnt over the link, in node-id order.
fn sibling_cas(api: &Api) -> Vec<String> {
    crate::tls::SiblingCard::all(&api.data_dir.join(crate::tls::SIBLING_WEB_DIR))
        .into_iter()
        .map(|card| card.ca_pem)
        .collect()
}

/// The host a client used (`Host`, without its port) when it is a plain name or
/// address; `None` for anything else, so it is safe to put in a link.
pub fn request_host(host: Option<&str>) -> Option<String> {
    let host = host?;
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        format!("[{}]", rest.split(']').next()?)
    } else {
        host.split(':').next()?.to_owned()
    };
    let plain = !without_port.is_empty()
        && without_port.len() <= 253
        && without_port.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    plain.then_some(without_port)
}

fn download(content_type: &str, file_name: &str, body: Bytes) -> Response<Bytes> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{file_name}\""))
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .expect("a valid response")
}

fn with_page_headers(builder: http::response::Builder, body: Bytes) -> Response<Bytes> {
    builder
        .header(header::CONTENT_SECURITY_POLICY, PAGE_CSP)
        .header(header::CACHE_CONTROL, "no-cache")
        .header("referrer-policy", "no-referrer")
        .body(body)
        .expect("a valid response")
}

/// A stable UUID (v4 layout) from bytes, so a profile installed twice replaces itself.
fn uuid_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    let hex: String = id.iter().map(|byte| format!("{byte:02X}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

fn base64_standard(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_kept_only_when_plain() {
        assert_eq!(request_host(Some("box.local")), Some("box.local".to_owned()));
        assert_eq!(request_host(Some("192.168.1.20:8080")), Some("192.168.1.20".to_owned()));
        assert_eq!(request_host(Some("[fe80::1]:80")), Some("[fe80::1]".to_owned()));
        assert_eq!(request_host(Some("evil\"><script>")), None);
        assert_eq!(request_host(None), None);
    }

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let uuid = uuid_of(b"node");
        assert_eq!(uuid, uuid_of(b"node"));
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
    }
}
