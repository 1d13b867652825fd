//! A browser's view of the map: a bounding box, widened by a margin so drivers entering the
//! view are already known to the page when they appear.

use serde::{Deserialize, Serialize};

/// West, south, east, north, in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Viewport {
    /// Westmost longitude.
    pub west: f64,
    /// Southmost latitude.
    pub south: f64,
    /// Eastmost longitude.
    pub east: f64,
    /// Northmost latitude.
    pub north: f64,
}

impl Viewport {
    /// From `[west, south, east, north]`; None when not finite or inverted.
    pub fn from_bbox(b: [f64; 4]) -> Option<Viewport> {
        let [west, south, east, north] = b;
        let ok = b.iter().all(|v| v.is_finite()) && west <= east && south <= north;
        ok.then_some(Viewport {
            west,
            south,
            east,
            north,
        })
    }

    /// The box grown by `fraction` of its size on every side.
    pub fn with_margin(self, fraction: f64) -> Viewport {
        let dx = (self.east - self.west) * fraction;
        let dy = (self.north - self.south) * fraction;
        Viewport {
            west: self.west - dx,
            south: self.south - dy,
            east: self.east + dx,
            north: self.north + dy,
        }
    }

    /// Whether a point lies inside.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        lat >= self.south && lat <= self.north && lon >= self.west && lon <= self.east
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_and_contains() {
        let v = Viewport::from_bbox([24.0, 60.0, 25.0, 61.0]).expect("valid");
        assert!(v.contains(60.5, 24.5));
        assert!(!v.contains(61.05, 24.5));
        assert!(v.with_margin(0.1).contains(61.05, 24.5));
        assert!(Viewport::from_bbox([25.0, 60.0, 24.0, 61.0]).is_none());
        assert!(Viewport::from_bbox([f64::NAN, 60.0, 24.0, 61.0]).is_none());
    }
}
