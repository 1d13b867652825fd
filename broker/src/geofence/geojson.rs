//! Fences read from and written as GeoJSON (RFC 7946): a Feature with a Polygon or
//! MultiPolygon geometry and `properties.name`, or a FeatureCollection of them.
//!
//! Only what a fence needs is read, by hand with `serde_json` rather than a GeoJSON crate:
//! rings of `[lon, lat]` positions, each closed, with at least four positions; anything
//! else is refused with the feature it was found in.

use super::tracker::Fence;
use geo::{Coord, LineString, MultiPolygon, Polygon};
use serde_json::{json, Value};

/// Why a GeoJSON document holds no fence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GeoJsonError(pub String);

fn bad(why: impl Into<String>) -> GeoJsonError {
    GeoJsonError(why.into())
}

/// Names a fence may have: they become topic levels, so no `/`, `+`, `#` or `$`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The fences of a FeatureCollection, or the one of a Feature.
///
/// # Errors
/// Not JSON, not a Feature(Collection), a geometry that is not a valid (Multi)Polygon, a
/// missing or invalid name, or a name given twice.
pub fn parse(text: &str) -> Result<Vec<Fence>, GeoJsonError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let features = match doc.get("type").and_then(Value::as_str) {
        Some("FeatureCollection") => doc
            .get("features")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("a FeatureCollection without a features array"))?
            .iter()
            .collect(),
        Some("Feature") => vec![&doc],
        _ => return Err(bad("neither a Feature nor a FeatureCollection")),
    };
    let mut fences: Vec<Fence> = Vec::with_capacity(features.len());
    for (i, f) in features.into_iter().enumerate() {
        let fence = feature(f).map_err(|e| bad(format!("feature {i}: {e}")))?;
        if fences.iter().any(|g| g.name == fence.name) {
            return Err(bad(format!(
                "feature {i}: the name {} is used twice",
                fence.name
            )));
        }
        fences.push(fence);
    }
    Ok(fences)
}

/// One Feature as a fence.
///
/// # Errors
/// As [`parse`].
pub fn feature(f: &Value) -> Result<Fence, GeoJsonError> {
    let name = f
        .pointer("/properties/name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no properties.name"))?;
    if !valid_name(name) {
        return Err(bad(format!(
            "name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    let geometry = f.get("geometry").ok_or_else(|| bad("no geometry"))?;
    let coords = geometry
        .get("coordinates")
        .ok_or_else(|| bad("a geometry without coordinates"))?;
    let area = match geometry.get("type").and_then(Value::as_str) {
        Some("Polygon") => MultiPolygon(vec![polygon(coords)?]),
        Some("MultiPolygon") => MultiPolygon(
            coords
                .as_array()
                .ok_or_else(|| bad("MultiPolygon coordinates are not an array"))?
                .iter()
                .map(polygon)
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err(bad("the geometry is not a Polygon or MultiPolygon")),
    };
    if area.0.is_empty() {
        return Err(bad("an empty MultiPolygon"));
    }
    Ok(Fence {
        name: name.to_owned(),
        area,
    })
}

fn polygon(v: &Value) -> Result<Polygon<f64>, GeoJsonError> {
    let rings = v
        .as_array()
        .ok_or_else(|| bad("Polygon coordinates are not an array of rings"))?;
    let mut rings = rings.iter().map(ring);
    let exterior = rings
        .next()
        .ok_or_else(|| bad("a Polygon without rings"))??;
    let interiors = rings.collect::<Result<_, _>>()?;
    Ok(Polygon::new(exterior, interiors))
}

fn ring(v: &Value) -> Result<LineString<f64>, GeoJsonError> {
    let positions = v.as_array().ok_or_else(|| bad("a ring is not an array"))?;
    if positions.len() < 4 {
        return Err(bad("a ring needs at least four positions"));
    }
    let coords: Vec<Coord<f64>> = positions
        .iter()
        .map(|p| {
            let lon = p.get(0).and_then(Value::as_f64);
            let lat = p.get(1).and_then(Value::as_f64);
            match (lon, lat) {
                (Some(x), Some(y))
                    if (-180.0..=180.0).contains(&x) && (-90.0..=90.0).contains(&y) =>
                {
                    Ok(Coord { x, y })
                }
                _ => Err(bad("a position is not [lon, lat] within range")),
            }
        })
        .collect::<Result<_, _>>()?;
    if coords.first() != coords.last() {
        return Err(bad(
            "a ring is not closed (its last position must be its first)",
        ));
    }
    Ok(LineString(coords))
}

/// A fence as a GeoJSON Feature, with the drivers inside as `properties.count`.
pub fn to_feature(fence: &Fence, count: usize) -> Value {
    let polygons: Vec<Value> = fence
        .area
        .0
        .iter()
        .map(|p| {
            let rings: Vec<Value> = std::iter::once(p.exterior())
                .chain(p.interiors())
                .map(|r| Value::from(r.0.iter().map(|c| json!([c.x, c.y])).collect::<Vec<_>>()))
                .collect();
            Value::from(rings)
        })
        .collect();
    json!({
        "type": "Feature",
        "properties": { "name": fence.name, "count": count },
        "geometry": { "type": "MultiPolygon", "coordinates": polygons },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQUARE: &str =
        r#"[[[24.93,60.16],[24.95,60.16],[24.95,60.17],[24.93,60.17],[24.93,60.16]]]"#;

    #[test]
    fn a_collection_of_polygons_is_read_and_written_back() {
        let text = format!(
            r#"{{"type":"FeatureCollection","features":[
                {{"type":"Feature","properties":{{"name":"airport"}},"geometry":{{"type":"Polygon","coordinates":{SQUARE}}}}},
                {{"type":"Feature","properties":{{"name":"port"}},"geometry":{{"type":"MultiPolygon","coordinates":[{SQUARE}]}}}}
            ]}}"#
        );
        let fences = parse(&text).expect("two fences");
        assert_eq!(fences.len(), 2);
        assert_eq!(fences[0].area, fences[1].area);
        let back = to_feature(&fences[0], 3);
        assert_eq!(back["properties"]["count"], 3);
        assert_eq!(feature(&back).expect("round trip").area, fences[0].area);
    }

    #[test]
    fn what_is_not_a_fence_is_refused_saying_where() {
        let polygon = |name: &str, coords: &str| {
            format!(
                r#"{{"type":"Feature","properties":{{"name":"{name}"}},"geometry":{{"type":"Polygon","coordinates":{coords}}}}}"#
            )
        };
        for (text, why) in [
            (polygon("a/b", SQUARE), "name"),
            (polygon("a", "[[[0,0],[1,0],[0,0]]]"), "four positions"),
            (polygon("a", "[[[0,0],[1,0],[1,1],[0,1]]]"), "not closed"),
            (polygon("a", "[[[0,0],[1,0],[1,91],[0,0]]]"), "within range"),
            ("{}".to_owned(), "neither"),
        ] {
            let e = parse(&text).expect_err(why);
            assert!(e.0.contains(why), "{why}: {e}");
        }
        let twice = format!(
            r#"{{"type":"FeatureCollection","features":[{},{}]}}"#,
            polygon("a", SQUARE),
            polygon("a", SQUARE)
        );
        assert!(parse(&twice).expect_err("twice").0.contains("twice"));
    }
}
