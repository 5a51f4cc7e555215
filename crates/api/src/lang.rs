//! Which language a request speaks: the `lang` cookie the pages' language switch sets, else
//! `Accept-Language`. The pages are served in it (`web`), and a new account's messages are
//! written in it (`account`: the user's language, engine state, set at sign-up and by the switch).

use axum::http::{header, HeaderMap};

/// The pages' and messages' languages: English (the default) and Japanese; the engine keeps
/// each user's (`User::language`).
pub type Lang = kinko_core::identity::Language;

/// The page language: the `lang` cookie the language switch sets, else the first language of
/// `Accept-Language` (by quality, then order) that the pages speak, else English.
pub fn choose_lang(headers: &HeaderMap) -> Lang {
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("lang="))
        .find_map(Lang::of);
    if let Some(l) = cookie {
        return l;
    }
    let Some(accept) = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()) else {
        return Lang::En;
    };
    // Qualities in thousandths, integers only.
    let mut best: Option<(u32, Lang)> = None;
    for item in accept.split(',').take(32) {
        let mut parts = item.split(';');
        let Some(lang) = parts.next().and_then(Lang::of) else {
            continue;
        };
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .map_or(1000, quality);
        if q > 0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, lang));
        }
    }
    best.map_or(Lang::En, |(_, l)| l)
}

/// An `Accept-Language` quality (`1`, `0.8`, `0.125`) in thousandths; malformed is 0.
pub(crate) fn quality(q: &str) -> u32 {
    let q = q.trim();
    let (whole, frac) = q.split_once('.').unwrap_or((q, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let frac_units = format!("{frac:0<3}").parse::<u32>().unwrap_or(0);
    match whole {
        "1" if frac_units == 0 => 1000,
        "0" => frac_units,
        _ => 0,
    }
}
