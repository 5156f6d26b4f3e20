//! The API's error type: a status, a stable code and a message in Chinese and English.
//! A 5xx says only "internal error"; the details go to the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use handheld_proto::{ErrorBody, Reason};

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message_zh: String,
    pub message_en: String,
    pub reasons: Vec<Reason>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, zh: impl Into<String>, en: impl Into<String>) -> ApiError {
        ApiError { status, code, message_zh: zh.into(), message_en: en.into(), reasons: Vec::new() }
    }

    pub fn bad_request(code: &'static str, zh: impl Into<String>, en: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, zh, en)
    }

    pub fn unauthorized(en: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "未登录或登录已失效，请重新登录", en)
    }

    pub fn not_found(code: &'static str, zh: impl Into<String>, en: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, zh, en)
    }

    pub fn internal() -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "内部错误，请联系管理员", "internal error")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::UnknownCylinder(code) => ApiError::not_found(
                "cylinder_not_found",
                format!("气瓶 {code} 未建档"),
                format!("cylinder {code} is not registered"),
            ),
            StoreError::AlreadyRegistered(code) => ApiError::new(
                StatusCode::CONFLICT,
                "already_registered",
                format!("气瓶 {code} 已建档"),
                format!("cylinder {code} is already registered"),
            ),
            StoreError::Invalid(msg) => {
                ApiError::bad_request("invalid_record", format!("数据不合法：{msg}"), format!("invalid record: {msg}"))
            }
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_owned(),
            message_zh: self.message_zh,
            message_en: self.message_en,
            reasons: self.reasons,
        };
        (self.status, Json(body)).into_response()
    }
}
