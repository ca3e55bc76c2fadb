//! `/v1/tenants/{tenant}/cards/{card}/photo`: the image a card shows, served from the photo
//! store by the content hash the card names. The hash is the entity tag, so a client that has
//! the image revalidates with `If-None-Match` and gets a bodiless 304.

use super::visible_tenant;
use crate::error::ApiError;
use crate::openapi::Refusals;
use crate::state::AppState;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use cardsync_auth::Principal;
use cardsync_store::cards;
use uuid::Uuid;

pub(super) fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/tenants/{tenant}/cards/{card}/photo").route(web::get().to(card_photo)),
    );
}

/// Private (the API needs a token) and revalidated on every use: the card's photo may change at
/// any time, and a revalidation costs one 304 without a body.
const CACHE_CONTROL: &str = "private, no-cache";

#[utoipa::path(
    get,
    operation_id = "cards_photo",
    path = "/v1/tenants/{tenant}/cards/{card}/photo",
    tag = "cards",
    params(
        ("tenant" = Uuid, Path, description = "The tenant (its Entra tenant id)"),
        ("card" = Uuid, Path, description = "The card"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer: 304 when the card still shows that image"),
    ),
    responses(
        (status = 200, description = "The image's bytes with its stored content type (image/jpeg, image/png, …; application/octet-stream when the stored type is not an image type); ETag is the quoted SHA-256 of the bytes",
            content((Vec<u8> = "image/*"), (Vec<u8> = "application/octet-stream")),
            headers(("ETag" = String, description = "\"<sha256 hex>\""), ("Cache-Control" = String, description = "private, no-cache"))),
        (status = 304, description = "The card still shows the image the If-None-Match tag names"),
        Refusals
    )
)]
pub(crate) async fn card_photo(
    state: web::Data<AppState>,
    caller: Principal,
    path: web::Path<(Uuid, Uuid)>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (tenant, card_id) = path.into_inner();
    let tenant = visible_tenant(&state, &caller, tenant).await?.tenant_id;
    let card = cards::get(&state.pool, tenant, card_id)
        .await?
        .ok_or_else(|| ApiError::not_found("card", card_id))?;
    let image = card
        .photo
        .ok_or_else(|| ApiError::not_found("card photo", card_id))?;
    let etag = format!("\"{}\"", image.sha256);
    if none_match(&request, &image.sha256) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
            .finish());
    }
    let bytes = state
        .photos
        .get(&image.sha256)
        .await
        .map_err(|error| ApiError::Unavailable {
            what: "the photo store",
            source: error.into(),
        })?
        .ok_or_else(|| {
            // The sweep keeps every image a card names, so this is a store that lost it (or a
            // card written elsewhere); the next photo change stores it again.
            tracing::warn!(%tenant, card = %card_id, "a card names a photo image the store lacks");
            ApiError::not_found("card photo", card_id)
        })?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type(&image.content_type)))
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(bytes))
}

/// The stored content type when it is an image type a header can carry, else a neutral one:
/// the type came from Graph, and the API never lets it make a browser render something else.
fn content_type(stored: &str) -> HeaderValue {
    let is_image = stored
        .get(..6)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("image/"))
        && stored.len() <= 255
        && !stored.contains("svg");
    match HeaderValue::from_str(stored) {
        Ok(value) if is_image => value,
        _ => HeaderValue::from_static("application/octet-stream"),
    }
}

/// Whether the request's `If-None-Match` names this image (`*`, or one of its tags, weak or
/// strong: RFC 9110 compares tags weakly for If-None-Match).
fn none_match(request: &HttpRequest, sha256: &str) -> bool {
    request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| {
            tag == "*"
                || tag
                    .trim_start_matches("W/")
                    .strip_prefix('"')
                    .and_then(|tag| tag.strip_suffix('"'))
                    == Some(sha256)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn if_none_match_matches_strong_weak_star_and_lists() {
        let hash = "ab".repeat(32);
        let matches = |value: &str| {
            let request = TestRequest::default()
                .insert_header((header::IF_NONE_MATCH, value))
                .to_http_request();
            none_match(&request, &hash)
        };
        assert!(matches(&format!("\"{hash}\"")));
        assert!(matches(&format!("W/\"{hash}\"")));
        assert!(matches(&format!("\"other\", \"{hash}\"")));
        assert!(matches("*"));
        assert!(!matches(&hash), "an unquoted tag is not a tag");
        assert!(!matches("\"other\""));
        assert!(!none_match(
            &TestRequest::default().to_http_request(),
            &hash
        ));
    }

    #[test]
    fn the_openapi_document_describes_the_photo_as_binary_image_content() {
        use utoipa::OpenApi as _;
        let document = serde_json::to_value(crate::openapi::ApiDoc::openapi()).unwrap();
        let operation = &document["paths"]["/v1/tenants/{tenant}/cards/{card}/photo"]["get"];
        let content = &operation["responses"]["200"]["content"];
        assert!(content.get("image/*").is_some(), "{content}");
        assert!(
            content.get("application/octet-stream").is_some(),
            "{content}"
        );
        assert!(
            operation["responses"]["200"]["headers"]
                .get("ETag")
                .is_some()
        );
        assert!(operation["responses"].get("304").is_some());
        assert!(operation["responses"].get("404").is_some());
    }

    #[test]
    fn only_image_types_are_served_as_such() {
        assert_eq!(content_type("image/jpeg"), "image/jpeg");
        assert_eq!(content_type("IMAGE/PNG"), "IMAGE/PNG");
        assert_eq!(content_type("text/html"), "application/octet-stream");
        assert_eq!(content_type("image/svg+xml"), "application/octet-stream");
        assert_eq!(content_type("image/\u{7f}"), "application/octet-stream");
        assert_eq!(content_type(""), "application/octet-stream");
    }
}
