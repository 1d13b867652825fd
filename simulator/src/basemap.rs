//! The offline basemap: streets, buildings, water and parks of a city, as GeoJSON derived
//! from an OpenStreetMap extract (the same `.osm.pbf` the simulator drives on), so the map
//! page needs no tile server and no internet. The data stays under the ODbL: the page
//! credits "(c) OpenStreetMap contributors".

use osmpbf::{Element, ElementReader};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Why a basemap could not be built.
#[derive(Debug, thiserror::Error)]
#[error("invalid OpenStreetMap PBF data")]
pub struct BasemapError(#[from] osmpbf::Error);

/// What a feature draws as.
fn kind_of(tags: &HashMap<&str, &str>) -> Option<(&'static str, String)> {
    if let Some(h) = tags.get("highway") {
        let class = match *h {
            "motorway" | "trunk" | "primary" | "secondary" => "major",
            "tertiary" | "unclassified" | "residential" | "living_street" => "street",
            "service" | "pedestrian" | "track" => "minor",
            "footway" | "path" | "cycleway" | "steps" | "bridleway" => "path",
            l if l.ends_with("_link") => "major",
            _ => return None,
        };
        return Some(("road", class.to_owned()));
    }
    if tags.contains_key("building") {
        return Some(("building", String::new()));
    }
    let water = matches!(tags.get("natural"), Some(&"water"))
        || matches!(tags.get("waterway"), Some(&"riverbank" | &"dock"))
        || matches!(tags.get("landuse"), Some(&"basin" | &"reservoir"));
    if water {
        return Some(("water", String::new()));
    }
    if tags.get("natural") == Some(&"coastline") {
        return Some(("coast", String::new()));
    }
    let green = matches!(
        tags.get("leisure"),
        Some(&"park" | &"garden" | &"playground")
    ) || matches!(
        tags.get("landuse"),
        Some(&"grass" | &"forest" | &"park" | &"cemetery")
    );
    if green {
        return Some(("green", String::new()));
    }
    None
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// Builds a GeoJSON FeatureCollection from `.osm.pbf` bytes. Feature property `k` is one of
/// `road` (with `c`: major, street, minor, path), `building`, `water`, `coast`, `green`;
/// `bounds` is `[west, south, east, north]` of what was drawn.
///
/// # Errors
/// Invalid PBF data.
pub fn geojson(pbf: &[u8]) -> Result<String, BasemapError> {
    let mut coords: HashMap<i64, (f64, f64)> = HashMap::new();
    let mut ways: Vec<(&'static str, String, Vec<i64>)> = Vec::new();
    ElementReader::new(std::io::Cursor::new(pbf)).for_each(|e| match e {
        Element::Node(n) => {
            coords.insert(n.id(), (round6(n.lon()), round6(n.lat())));
        }
        Element::DenseNode(n) => {
            coords.insert(n.id(), (round6(n.lon()), round6(n.lat())));
        }
        Element::Way(w) => {
            let tags: HashMap<&str, &str> = w.tags().collect();
            if let Some((k, c)) = kind_of(&tags) {
                ways.push((k, c, w.refs().collect()));
            }
        }
        Element::Relation(_) => {}
    })?;
    let mut bounds = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
    let mut features: Vec<Value> = Vec::with_capacity(ways.len());
    // Areas first, then lines on top.
    ways.sort_by_key(|(k, _, _)| match *k {
        "water" => 0,
        "green" => 1,
        "building" => 2,
        "coast" => 3,
        _ => 4,
    });
    for (kind, class, refs) in ways {
        let line: Vec<[f64; 2]> = refs
            .iter()
            .filter_map(|r| coords.get(r).map(|&(x, y)| [x, y]))
            .collect();
        if line.len() < 2 {
            continue;
        }
        for p in &line {
            bounds = [
                bounds[0].min(p[0]),
                bounds[1].min(p[1]),
                bounds[2].max(p[0]),
                bounds[3].max(p[1]),
            ];
        }
        let closed = refs.first() == refs.last() && line.len() >= 4 && line.len() == refs.len();
        let geometry = if matches!(kind, "building" | "water" | "green") && closed {
            json!({"type": "Polygon", "coordinates": [line]})
        } else {
            json!({"type": "LineString", "coordinates": line})
        };
        let properties = if class.is_empty() {
            json!({"k": kind})
        } else {
            json!({"k": kind, "c": class})
        };
        features.push(json!({"type": "Feature", "geometry": geometry, "properties": properties}));
    }
    let doc = json!({
        "type": "FeatureCollection",
        "bounds": bounds,
        "attribution": "(c) OpenStreetMap contributors, ODbL",
        "features": features,
    });
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::road_graph::HELSINKI_PBF;

    #[test]
    fn helsinki_basemap_has_streets_buildings_and_water() {
        let text = geojson(HELSINKI_PBF).expect("basemap");
        let doc: Value = serde_json::from_str(&text).expect("json");
        let count = |k: &str| {
            doc["features"]
                .as_array()
                .expect("features")
                .iter()
                .filter(|f| f["properties"]["k"] == k)
                .count()
        };
        assert!(count("road") > 500, "roads {}", count("road"));
        assert!(count("building") > 100, "buildings {}", count("building"));
        assert!(count("water") + count("coast") > 0);
        let b = doc["bounds"].as_array().expect("bounds");
        assert!(b[0].as_f64().unwrap_or(0.0) > 24.9 && b[3].as_f64().unwrap_or(0.0) < 60.2);
        assert!(doc["attribution"]
            .as_str()
            .unwrap_or("")
            .contains("OpenStreetMap contributors"));
    }
}
