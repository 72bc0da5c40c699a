//! The cookie session: a browser can keep its token out of URLs by POSTing it
//! once; the subscribe endpoint then reads it from this cookie.

/// Name of the session cookie, scoped to `/api/notifications`.
pub const COOKIE_NAME: &str = "campusbite_notify";

/// The path the cookie is sent to.
pub const COOKIE_PATH: &str = "/api/notifications";
