//! Azure Blob Storage, through its REST API: just what backups need (create the container,
//! stage blocks, commit a block list with metadata, list, read as a stream, delete). Requests
//! are signed with the account's shared key ("Authorize with Shared Key") or carry an Entra ID
//! bearer token. Neither the key nor a token ever reaches an error message.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use sha2::Sha256;

/// The Blob service version requests are made with (supported by Azure and azurite 3.37).
pub const API_VERSION: &str = "2025-01-05";

/// Characters escaped in a blob path or query value.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How requests are authorized.
#[derive(Clone)]
pub enum BlobAuth {
    /// The account name and its base64 key.
    SharedKey { account: String, key: Vec<u8> },
    /// A bearer token for `https://storage.azure.com`.
    Bearer(String),
}

impl fmt::Debug for BlobAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SharedKey { account, .. } => write!(f, "SharedKey({account}, <redacted>)"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// One container of one storage account.
#[derive(Debug, Clone)]
pub struct Container {
    http: reqwest::Client,
    /// `https://<account>.blob.core.windows.net` or `http://host:port/<account>`, no slash at
    /// the end.
    account_url: String,
    /// The path of `account_url` (empty, or `/<account>` path-style).
    account_path: String,
    container: String,
    auth: BlobAuth,
}

/// Why a Blob request failed. Messages name the operation and the service's error code.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("Blob storage at {endpoint} is unreachable: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("Blob storage refused to {action}: HTTP {status} {code}")]
    Refused {
        action: &'static str,
        status: u16,
        code: String,
    },
    #[error("blob {0} does not exist")]
    NotFound(String),
}

/// A committed blob as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobItem {
    pub name: String,
    pub size: u64,
    /// `x-ms-meta-*` values, names lowercase.
    pub metadata: Vec<(String, String)>,
}

impl BlobItem {
    pub fn meta(&self, name: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Container {
    pub fn new(account_url: &str, container: &str, auth: BlobAuth) -> Result<Self, String> {
        let account_url = account_url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&account_url).map_err(|e| format!("account URL: {e}"))?;
        let account_path = parsed.path().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            http,
            account_url,
            account_path,
            container: container.to_owned(),
            auth,
        })
    }

    /// The account name a shared key signs for: the host's first label, or the path-style
    /// URL's first path segment.
    pub fn account_from_url(account_url: &str) -> Option<String> {
        let parsed = reqwest::Url::parse(account_url).ok()?;
        match parsed.path_segments().and_then(|mut s| s.next()) {
            Some(segment) if !segment.is_empty() => Some(segment.to_owned()),
            _ => parsed
                .host_str()
                .and_then(|h| h.split('.').next())
                .map(str::to_owned),
        }
    }

    /// Creates the container unless it exists.
    #[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", peer.service = "azure-blob"))]
    pub async fn ensure(&self) -> Result<(), BlobError> {
        let response = self
            .send(Method::PUT, "", &[("restype", "container")], &[], None)
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(()),
            StatusCode::CONFLICT => Ok(()),
            _ => Err(refused("create the container", response).await),
        }
    }

    /// Stages one block of `blob`.
    #[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", peer.service = "azure-blob"))]
    pub async fn put_block(&self, blob: &str, id: &str, data: Vec<u8>) -> Result<(), BlobError> {
        let query = [("comp", "block"), ("blockid", id)];
        let response = self
            .send(Method::PUT, blob, &query, &[], Some(data))
            .await?;
        if response.status() == StatusCode::CREATED {
            Ok(())
        } else {
            Err(refused("stage a block", response).await)
        }
    }

    /// Commits `ids` as the content of `blob` with `metadata`: only now does the blob exist.
    #[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", peer.service = "azure-blob"))]
    pub async fn put_block_list(
        &self,
        blob: &str,
        ids: &[String],
        metadata: &[(&str, String)],
    ) -> Result<(), BlobError> {
        let mut body = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in ids {
            body.push_str("<Latest>");
            body.push_str(id);
            body.push_str("</Latest>");
        }
        body.push_str("</BlockList>");
        let mut headers: Vec<(String, String)> = metadata
            .iter()
            .map(|(n, v)| (format!("x-ms-meta-{n}"), v.clone()))
            .collect();
        headers.push((
            "x-ms-blob-content-type".into(),
            "application/octet-stream".into(),
        ));
        let response = self
            .send(
                Method::PUT,
                blob,
                &[("comp", "blocklist")],
                &headers,
                Some(body.into_bytes()),
            )
            .await?;
        if response.status() == StatusCode::CREATED {
            Ok(())
        } else {
            Err(refused("commit the block list", response).await)
        }
    }

    /// The committed blobs whose names start with `prefix`, with their metadata, by name.
    #[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", peer.service = "azure-blob"))]
    pub async fn list(&self, prefix: &str) -> Result<Vec<BlobItem>, BlobError> {
        let mut items = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![
                ("restype", "container"),
                ("comp", "list"),
                ("prefix", prefix),
                ("include", "metadata"),
            ];
            if !marker.is_empty() {
                query.push(("marker", marker.as_str()));
            }
            let response = self.send(Method::GET, "", &query, &[], None).await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(Vec::new());
            }
            if response.status() != StatusCode::OK {
                return Err(refused("list the backups", response).await);
            }
            let text = response.text().await.map_err(|e| self.unreachable(&e))?;
            items.extend(parse_list(&text));
            marker = element(&text, "NextMarker").unwrap_or_default();
            if marker.is_empty() {
                break;
            }
        }
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(items)
    }

    /// The response of a Get Blob, to read as a stream.
    #[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", peer.service = "azure-blob"))]
    pub async fn get(&self, blob: &str) -> Result<Response, BlobError> {
        let response = self.send(Method::GET, blob, &[], &[], None).await?;
        match response.status() {
            StatusCode::OK => Ok(response),
            StatusCode::NOT_FOUND => Err(BlobError::NotFound(blob.to_owned())),
            _ => Err(refused("read a backup", response).await),
        }
    }

    /// Deletes `blob`; a blob already gone is fine.
    #[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", peer.service = "azure-blob"))]
    pub async fn delete(&self, blob: &str) -> Result<(), BlobError> {
        let response = self.send(Method::DELETE, blob, &[], &[], None).await?;
        match response.status() {
            StatusCode::ACCEPTED | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(refused("delete an old backup", response).await),
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> BlobError {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        BlobError::Unreachable {
            endpoint: self.account_url.clone(),
            detail,
        }
    }

    async fn send(
        &self,
        method: Method,
        blob: &str,
        query: &[(&str, &str)],
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, BlobError> {
        let path = if blob.is_empty() {
            format!("/{}", self.container)
        } else {
            format!("/{}/{}", self.container, utf8_percent_encode(blob, PATH))
        };
        let query_string = query
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY)))
            .collect::<Vec<_>>()
            .join("&");
        let mut url = format!("{}{path}", self.account_url);
        if !query_string.is_empty() {
            url.push('?');
            url.push_str(&query_string);
        }
        let date = k8s_openapi::jiff::Timestamp::now()
            .strftime("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let mut all: Vec<(String, String)> = vec![
            ("x-ms-date".into(), date),
            ("x-ms-version".into(), API_VERSION.into()),
        ];
        all.extend(headers.iter().cloned());
        let length = body.as_ref().map_or(0, Vec::len);
        let mut request: RequestBuilder = self.http.request(method.clone(), &url);
        for (name, value) in &all {
            request = request.header(name, value);
        }
        let authorization = match &self.auth {
            BlobAuth::Bearer(token) => format!("Bearer {token}"),
            BlobAuth::SharedKey { account, key } => {
                let resource = format!("/{account}{}{path}", self.account_path);
                let to_sign = string_to_sign(&method, length, &all, &resource, query);
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
                mac.update(to_sign.as_bytes());
                let signature = BASE64.encode(mac.finalize().into_bytes());
                format!("SharedKey {account}:{signature}")
            }
        };
        request = request.header("authorization", authorization);
        request = request.header("content-length", length.to_string());
        if let Some(body) = body {
            request = request.body(body);
        }
        request.send().await.map_err(|e| self.unreachable(&e))
    }
}

/// The string a Shared Key signature covers (Blob service, version 2015-02-21 and later).
fn string_to_sign(
    method: &Method,
    length: usize,
    headers: &[(String, String)],
    resource: &str,
    query: &[(&str, &str)],
) -> String {
    let length = if length == 0 {
        String::new()
    } else {
        length.to_string()
    };
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-ms-"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    ms.sort();
    let mut out = format!("{method}\n\n\n{length}\n\n\n\n\n\n\n\n\n");
    for (name, value) in ms {
        out.push_str(&format!("{name}:{value}\n"));
    }
    out.push_str(resource);
    let mut params: Vec<(String, &str)> = query
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    params.sort();
    for (name, value) in params {
        out.push_str(&format!("\n{name}:{value}"));
    }
    out
}

async fn refused(action: &'static str, response: Response) -> BlobError {
    let status = response.status().as_u16();
    let code = response
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let code = match code {
        Some(code) => code,
        None => {
            let body = response.text().await.unwrap_or_default();
            element(&body, "Code").unwrap_or_default()
        }
    };
    BlobError::Refused {
        action,
        status,
        code,
    }
}

/// The text of the first `<name>` element of `xml`, unescaped.
fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(unescape(&xml[start..end]))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The blobs of a List Blobs answer.
fn parse_list(xml: &str) -> Vec<BlobItem> {
    xml.split("<Blob>")
        .skip(1)
        .filter_map(|blob| {
            let blob = blob.split("</Blob>").next()?;
            let name = element(blob, "Name")?;
            let size = element(blob, "Content-Length")?.parse().ok()?;
            let metadata = match blob.find("<Metadata>") {
                None => Vec::new(),
                Some(start) => {
                    let rest = &blob[start + "<Metadata>".len()..];
                    let rest = rest.split("</Metadata>").next().unwrap_or_default();
                    metadata_pairs(rest)
                }
            };
            Some(BlobItem {
                name,
                size,
                metadata,
            })
        })
        .collect()
}

/// `<name>value</name>` pairs, in order.
fn metadata_pairs(mut xml: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    while let Some(open) = xml.find('<') {
        let Some(close) = xml[open..].find('>') else {
            break;
        };
        let name = &xml[open + 1..open + close];
        if name.starts_with('/') || name.ends_with('/') {
            xml = &xml[open + close + 1..];
            continue;
        }
        let after = &xml[open + close + 1..];
        let end_tag = format!("</{name}>");
        let Some(end) = after.find(&end_tag) else {
            break;
        };
        pairs.push((name.to_ascii_lowercase(), unescape(&after[..end])));
        xml = &after[end + end_tag.len()..];
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_comes_from_the_host_or_the_path() {
        assert_eq!(
            Container::account_from_url("https://tiqzybackups.blob.core.windows.net").as_deref(),
            Some("tiqzybackups")
        );
        assert_eq!(
            Container::account_from_url("http://127.0.0.1:10000/devstoreaccount1").as_deref(),
            Some("devstoreaccount1")
        );
    }

    #[test]
    fn a_listing_gives_names_sizes_and_metadata() {
        let xml = "<?xml version=\"1.0\"?><EnumerationResults><Blobs>\
            <Blob><Name>a/a-1</Name><Properties><Content-Length>12</Content-Length></Properties>\
            <Metadata><sha256>ab</sha256><Format>1</Format></Metadata></Blob>\
            <Blob><Name>a/b&amp;c</Name><Properties><Content-Length>0</Content-Length></Properties><Metadata/></Blob>\
            </Blobs><NextMarker/></EnumerationResults>";
        let items = parse_list(xml);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].meta("sha256"), Some("ab"));
        assert_eq!(items[0].meta("format"), Some("1"));
        assert_eq!(items[0].size, 12);
        assert_eq!(items[1].name, "a/b&c");
        assert!(items[1].metadata.is_empty());
        assert_eq!(element(xml, "NextMarker"), None);
    }

    #[test]
    fn the_signed_string_follows_the_documented_layout() {
        let headers = vec![
            ("x-ms-version".to_owned(), API_VERSION.to_owned()),
            (
                "x-ms-date".to_owned(),
                "Tue, 01 Dec 2026 20:00:00 GMT".to_owned(),
            ),
        ];
        let s = string_to_sign(
            &Method::PUT,
            5,
            &headers,
            "/acct/acct/c/b",
            &[("comp", "block"), ("blockid", "QQ==")],
        );
        assert_eq!(
            s,
            "PUT\n\n\n5\n\n\n\n\n\n\n\n\nx-ms-date:Tue, 01 Dec 2026 20:00:00 GMT\n\
             x-ms-version:2025-01-05\n/acct/acct/c/b\nblockid:QQ==\ncomp:block"
        );
    }
}
