//! A page blob reached through a SAS URL: Put Page, Get Page Ranges and
//! ranged reads, one attempt each (callers own retries and SAS renewal).
//!
//! A disk created with `dataAccessAuthMode` AzureActiveDirectory wants an
//! Entra token (audience `https://disk.azure.com/`) beside the SAS. The
//! service says so by answering 401 with `WWW-Authenticate: Bearer ...
//! resource_id="https://disk.azure.com/"`; as the storage SDKs' challenge
//! policies do, the client then gets a token for that audience, sends the
//! same request again with it, and keeps sending it. A token that expires
//! draws the same challenge and is fetched again. So disks made elsewhere
//! (an upload resumed, a disk only read) work as well as ours.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::token::TokenSource;
use super::{transport, Error, Secret, DISK_RESOURCE, STORAGE_VERSION};

/// The largest Put Page the service takes.
pub const MAX_PUT_PAGE: usize = 4 << 20;
/// Page size: every write starts and ends on it.
pub const PAGE: u64 = 512;
/// Most page-range listing pages followed.
const MAX_LIST_PAGES: u32 = 100_000;

/// Page blob calls over one HTTP client.
#[derive(Clone)]
pub struct PageBlob {
    http: reqwest::Client,
    entra: Arc<EntraAuth>,
}

/// The Entra token sent beside SAS URLs once a disk has asked for one.
struct EntraAuth {
    tokens: Arc<dyn TokenSource>,
    current: Mutex<Option<Secret>>,
}

/// True when `r` is the challenge of a disk that wants an Entra token.
fn wants_entra_token(r: &reqwest::Response) -> bool {
    r.status() == reqwest::StatusCode::UNAUTHORIZED
        && r.headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(is_disk_challenge)
}

/// True for a `WWW-Authenticate` value naming the disks' audience, quoted
/// or not (`Bearer authorization_uri=..., resource_id="https://disk.azure.com/"`).
fn is_disk_challenge(v: &str) -> bool {
    let v = v.trim_start();
    v.get(..6).is_some_and(|b| b.eq_ignore_ascii_case("bearer"))
        && (v.contains(&format!("resource_id=\"{DISK_RESOURCE}\""))
            || v.contains(&format!("resource_id={DISK_RESOURCE}")))
}

/// `sas` with more query parameters.
fn url(sas: &Secret, extra: &str) -> String {
    let s = sas.expose();
    let sep = if s.contains('?') { '&' } else { '?' };
    format!("{s}{sep}{extra}")
}

async fn blob_error(what: &str, r: reqwest::Response) -> Error {
    let status = r.status().as_u16();
    let code = r
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| r.status().canonical_reason().unwrap_or("error").to_owned());
    Error::Blob {
        what: what.to_owned(),
        status,
        code,
    }
}

impl PageBlob {
    /// Page blob calls with `settings`' timeouts; `disk_tokens` answers the
    /// disks that want an Entra token (asked only then).
    pub fn new(
        settings: &super::Settings,
        disk_tokens: Arc<dyn TokenSource>,
    ) -> Result<PageBlob, Error> {
        Ok(PageBlob {
            http: super::http_client(settings)?,
            entra: Arc::new(EntraAuth {
                tokens: disk_tokens,
                current: Mutex::new(None),
            }),
        })
    }

    /// Sends the request `build` makes, with the Entra token once one is
    /// held; a challenge for one gets a fresh token and one more try.
    async fn send(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let held = self.entra.current.lock().ok().and_then(|t| t.clone());
        let with = |t: &Option<Secret>| match t {
            Some(t) => build().bearer_auth(t.expose()),
            None => build(),
        };
        let r = with(&held).send().await.map_err(|e| transport(what, e))?;
        if !wants_entra_token(&r) {
            return Ok(r);
        }
        let token = self.entra.tokens.token().await.map_err(|e| {
            let why = match e {
                Error::Token(m) => m,
                other => other.to_string(),
            };
            Error::Token(format!(
                "{what}: the disk wants an Entra ID token beside its SAS (its dataAccessAuthMode is AzureActiveDirectory): {why}"
            ))
        })?;
        if let Ok(mut t) = self.entra.current.lock() {
            *t = Some(token.clone());
        }
        let r = with(&Some(token))
            .send()
            .await
            .map_err(|e| transport(what, e))?;
        if wants_entra_token(&r) {
            return Err(Error::Token(format!(
                "{what}: the disk refused the Entra ID token ({}); it must be for {DISK_RESOURCE} and its identity needs the role Data Operator for Managed Disks",
                self.entra.tokens.describe()
            )));
        }
        Ok(r)
    }

    /// Writes `data` (512-byte aligned, at most 4 MiB) at `offset`.
    pub async fn put_page(
        &self,
        sas: &Secret,
        offset: u64,
        data: bytes::Bytes,
    ) -> Result<(), Error> {
        let what = format!("writing {} bytes at offset {offset}", data.len());
        let len = data.len() as u64;
        if !offset.is_multiple_of(PAGE)
            || !len.is_multiple_of(PAGE)
            || len == 0
            || data.len() > MAX_PUT_PAGE
        {
            return Err(Error::Protocol {
                what,
                detail: "Put Page needs 512-byte aligned ranges of at most 4 MiB".into(),
            });
        }
        let r = self
            .send(&what, || {
                self.http
                    .put(url(sas, "comp=page"))
                    .header("x-ms-version", STORAGE_VERSION)
                    .header("x-ms-page-write", "update")
                    .header(
                        "x-ms-range",
                        format!("bytes={}-{}", offset, offset + len - 1),
                    )
                    .header("Content-Length", len)
                    .body(data.clone())
            })
            .await?;
        if r.status().is_success() {
            return Ok(());
        }
        Err(blob_error(&what, r).await)
    }

    /// Makes `len` bytes at `offset` (512-byte aligned) read as zeros: Put
    /// Page with `x-ms-page-write: clear`, which carries no body and, unlike
    /// an update, may span any length of the blob.
    pub async fn clear_pages(&self, sas: &Secret, offset: u64, len: u64) -> Result<(), Error> {
        let what = format!("clearing {len} bytes at offset {offset}");
        if !offset.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) || len == 0 {
            return Err(Error::Protocol {
                what,
                detail: "Clear Page needs 512-byte aligned ranges".into(),
            });
        }
        let r = self
            .send(&what, || {
                self.http
                    .put(url(sas, "comp=page"))
                    .header("x-ms-version", STORAGE_VERSION)
                    .header("x-ms-page-write", "clear")
                    .header(
                        "x-ms-range",
                        format!("bytes={}-{}", offset, offset + len - 1),
                    )
                    .header("Content-Length", 0)
            })
            .await?;
        if r.status().is_success() {
            return Ok(());
        }
        Err(blob_error(&what, r).await)
    }

    /// Reads `len` bytes at `offset`.
    pub async fn read(&self, sas: &Secret, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        let what = format!("reading {len} bytes at offset {offset}");
        if len == 0 {
            return Ok(Vec::new());
        }
        let r = self
            .send(&what, || {
                self.http
                    .get(sas.expose())
                    .header("x-ms-version", STORAGE_VERSION)
                    .header(
                        "x-ms-range",
                        format!("bytes={}-{}", offset, offset + len - 1),
                    )
            })
            .await?;
        if !r.status().is_success() {
            return Err(blob_error(&what, r).await);
        }
        let body = r.bytes().await.map_err(|e| transport(&what, e))?;
        if body.len() as u64 != len {
            return Err(Error::Protocol {
                what,
                detail: format!("{} bytes came back", body.len()),
            });
        }
        Ok(body.to_vec())
    }

    /// The written page ranges as the service lists them, every page of the
    /// listing followed (see [`check_listing`] before trusting them).
    pub async fn page_ranges(&self, sas: &Secret) -> Result<Vec<Range<u64>>, Error> {
        let what = "listing the written page ranges";
        let mut ranges = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let mut q = "comp=pagelist".to_owned();
            if let Some(m) = &marker {
                q.push_str("&marker=");
                q.push_str(&url::form_urlencoded::byte_serialize(m.as_bytes()).collect::<String>());
            }
            let r = self
                .send(what, || {
                    self.http
                        .get(url(sas, &q))
                        .header("x-ms-version", STORAGE_VERSION)
                })
                .await?;
            if !r.status().is_success() {
                return Err(blob_error(what, r).await);
            }
            let body = r.text().await.map_err(|e| transport(what, e))?;
            let (page, next) = parse_page_list(&body).ok_or_else(|| Error::Protocol {
                what: what.into(),
                detail: "the page list is not the XML expected".into(),
            })?;
            ranges.extend(page);
            marker = next;
            if marker.is_none() {
                return Ok(ranges);
            }
        }
        Err(Error::Protocol {
            what: what.into(),
            detail: format!("more than {MAX_LIST_PAGES} pages of ranges"),
        })
    }
}

/// Checks a page-range listing of a blob of `size` bytes: each range
/// 512-byte aligned, not empty, within the blob, after the one before it.
/// Azure lists them so; anything else is an answer not to build on.
pub fn check_listing(ranges: &[Range<u64>], size: u64) -> Result<(), String> {
    let mut end = 0;
    for r in ranges {
        if !r.start.is_multiple_of(PAGE) || !r.end.is_multiple_of(PAGE) {
            return Err(format!(
                "the range {}..{} is not 512-byte aligned",
                r.start, r.end
            ));
        }
        if r.end > size {
            return Err(format!(
                "the range {}..{} ends past the blob's {size} bytes",
                r.start, r.end
            ));
        }
        if r.start < end {
            return Err(format!(
                "the range {}..{} is not after the one before it (which ends at {end})",
                r.start, r.end
            ));
        }
        end = r.end;
    }
    Ok(())
}

/// Sorts ranges and merges those that overlap or touch.
pub fn merge(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The `PageRange` elements (as half-open ranges) and `NextMarker` of a
/// page list; `None` when it is not one (public for the fuzz targets).
pub fn parse_page_list(xml: &str) -> Option<(Vec<Range<u64>>, Option<String>)> {
    if !xml.contains("<PageList") {
        return None;
    }
    let mut ranges = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<PageRange>") {
        rest = &rest[i + "<PageRange>".len()..];
        let end = rest.find("</PageRange>")?;
        let item = &rest[..end];
        let start: u64 = element(item, "Start")?.parse().ok()?;
        let last: u64 = element(item, "End")?.parse().ok()?;
        // An End at u64::MAX has no half-open end: not an answer Azure gives.
        if last < start {
            return None;
        }
        ranges.push(start..last.checked_add(1)?);
        rest = &rest[end..];
    }
    let next = element(xml, "NextMarker")
        .filter(|m| !m.is_empty())
        .map(str::to_owned);
    Some((ranges, next))
}

fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let i = xml.find(&open)? + open.len();
    let j = xml[i..].find(&format!("</{name}>"))?;
    Some(xml[i..i + j].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_range_ending_at_the_last_byte_of_u64_is_refused_not_wrapped() {
        let xml = "<PageList><PageRange><Start>0</Start><End>18446744073709551615</End></PageRange></PageList>";
        assert_eq!(parse_page_list(xml), None);
    }

    #[test]
    fn page_lists_parse_and_merge() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><PageList><PageRange><Start>512</Start><End>1023</End></PageRange><PageRange><Start>0</Start><End>511</End></PageRange><PageRange><Start>4096</Start><End>8191</End></PageRange><NextMarker>abc</NextMarker></PageList>"#;
        let (ranges, next) = parse_page_list(xml).unwrap();
        assert_eq!(ranges, vec![512..1024, 0..512, 4096..8192]);
        assert_eq!(next.as_deref(), Some("abc"));
        assert_eq!(merge(ranges), vec![0..1024, 4096..8192]);
        let (none, next) = parse_page_list("<PageList />").unwrap();
        assert!(none.is_empty() && next.is_none());
        assert!(parse_page_list("<Error/>").is_none());
        assert!(parse_page_list(
            "<PageList><PageRange><Start>9</Start><End>1</End></PageRange></PageList>"
        )
        .is_none());
    }

    #[test]
    fn only_a_challenge_for_the_disks_audience_asks_for_a_token() {
        assert!(is_disk_challenge(
            r#"Bearer authorization_uri="https://login.microsoftonline.com/t/oauth2/authorize", resource_id="https://disk.azure.com/""#
        ));
        assert!(is_disk_challenge(
            "bearer authorization_uri=https://login.microsoftonline.com/t resource_id=https://disk.azure.com/"
        ));
        assert!(!is_disk_challenge(
            r#"Bearer authorization_uri="https://login.microsoftonline.com/t", resource_id="https://storage.azure.com""#
        ));
        assert!(!is_disk_challenge(r#"Basic realm="x""#));
    }

    #[test]
    fn sas_urls_get_more_parameters() {
        let s = Secret::new("http://127.0.0.1/c/b?sv=1&sig=x");
        assert_eq!(
            url(&s, "comp=page"),
            "http://127.0.0.1/c/b?sv=1&sig=x&comp=page"
        );
    }

    #[test]
    // One-range lists are what these functions take here.
    #[allow(clippy::single_range_in_vec_init)]
    fn listings_are_checked_before_they_are_trusted() {
        assert!(check_listing(&[0..512, 1024..4096], 4096).is_ok());
        assert!(check_listing(&[], 4096).is_ok());
        assert!(check_listing(&[0..100], 4096)
            .unwrap_err()
            .contains("aligned"));
        assert!(check_listing(&[0..8192], 4096)
            .unwrap_err()
            .contains("past"));
        assert!(check_listing(&[1024..2048, 0..512], 4096)
            .unwrap_err()
            .contains("not after"));
        assert!(
            check_listing(&[0..1024, 512..2048], 4096).is_err(),
            "overlap"
        );
    }
}
