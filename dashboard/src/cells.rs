//! Server-side aggregation: when a browser's view holds more drivers than
//! `aggregate_above`, the bridge sends it per-cell counts by status instead of positions.
//!
//! The grid follows the view's size the way map zoom levels do: a cell is `360 / 2^k`
//! degrees of longitude, the largest `k` that keeps the view within [`CELLS_ACROSS`] cells,
//! and `1 / 2^j` of that in latitude, `j` chosen so cells are about square on a Web
//! Mercator map at the view's latitude. Cells are anchored at 0/0, so panning moves the
//! view over the same cells and they do not flicker. A browser that sees everything the
//! default filters show (no token, the default subscription) shares one pass over the
//! board per grid and batch interval with every other such browser ([`CellCache`]); others
//! get a pass of their own.

use crate::board::{Board, View};
use crate::viewport::Viewport;
use fleetcast_proto::Status;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// At most this many cells across (or down) a view, margin included.
pub const CELLS_ACROSS: f64 = 48.0;
/// The finest grid: `360 / 2^30` degrees (about 4 cm); no view is smaller.
const MAX_K: u8 = 30;

/// A grid: cells of `360 / 2^k` degrees of longitude by `1 / 2^j` of that of latitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Grid {
    k: u8,
    j: u8,
}

impl Grid {
    /// The grid for a view: its box within [`CELLS_ACROSS`] cells each way. A browser that
    /// gave no viewport sees the whole world.
    pub fn for_view(viewport: Option<&Viewport>) -> Grid {
        let v = viewport.copied().unwrap_or(Viewport {
            west: -180.0,
            south: -85.0,
            east: 180.0,
            north: 85.0,
        });
        let mid = ((v.south + v.north) / 2.0).clamp(-85.0, 85.0).to_radians();
        // cos(60 degrees) = 1/2: one row of latitude is half a column.
        let j = (1.0 / mid.cos()).log2().round().clamp(0.0, 3.0) as u8;
        let mut k = MAX_K;
        while k > 0 {
            let g = Grid { k, j };
            let (dx, dy) = g.size();
            if (v.east - v.west) / dx <= CELLS_ACROSS && (v.north - v.south) / dy <= CELLS_ACROSS {
                break;
            }
            k -= 1;
        }
        Grid { k, j }
    }

    /// `[degrees of longitude, degrees of latitude]` of one cell.
    pub fn size(&self) -> (f64, f64) {
        let dx = 360.0 / f64::from(1u32 << self.k);
        (dx, dx / f64::from(1u32 << self.j))
    }

    fn cell(&self, lat: f64, lon: f64) -> (i64, i64) {
        let (dx, dy) = self.size();
        ((lon / dx).floor() as i64, (lat / dy).floor() as i64)
    }
}

/// Drivers in one cell: counts by status and the sum of their positions.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    counts: [u32; 3],
    lat: f64,
    lon: f64,
}

/// One cell as the browser gets it: `[lat, lon, available, to_pickup, on_trip]`, the
/// position being the mean of its drivers' (where the page draws the bubble).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cell(pub f64, pub f64, pub u32, pub u32, pub u32);

/// What one view holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Census {
    /// Drivers in the cells the view touches.
    pub drivers: usize,
    /// Those cells, at most `max_cells`.
    pub cells: Vec<Cell>,
}

type Tallies = HashMap<(i64, i64), Tally>;

/// One pass over the board: every driver `view` shows, counted into `grid`'s cells. At
/// most one cell per driver, so bounded by the board's `max_drivers`.
fn tally(board: &Board, view: &View, grid: Grid) -> Tallies {
    let mut cells = Tallies::new();
    board.visit_live(view, |loc| {
        let t = cells.entry(grid.cell(loc.lat, loc.lon)).or_default();
        let i = match loc.status {
            Status::Available => 0,
            Status::ToPickup => 1,
            Status::OnTrip => 2,
        };
        t.counts[i] += 1;
        t.lat += loc.lat;
        t.lon += loc.lon;
    });
    cells
}

/// The cells of `tallies` that `viewport` touches, at most `max_cells` of them (a view is
/// at most [`CELLS_ACROSS`] cells each way, so only a view without a viewport could hold
/// more); every driver in them is counted.
fn census(tallies: &Tallies, grid: Grid, viewport: Option<&Viewport>, max_cells: usize) -> Census {
    let range = viewport.map(|v| (grid.cell(v.south, v.west), grid.cell(v.north, v.east)));
    let round = |v: f64| (v * 1e5).round() / 1e5;
    let mut out = Census::default();
    for (&(col, row), t) in tallies {
        let inside = range
            .is_none_or(|((c0, r0), (c1, r1))| col >= c0 && col <= c1 && row >= r0 && row <= r1);
        if !inside {
            continue;
        }
        let n: u32 = t.counts.iter().sum();
        out.drivers += n as usize;
        let [a, p, o] = t.counts;
        let k = f64::from(n.max(1));
        out.cells
            .push(Cell(round(t.lat / k), round(t.lon / k), a, p, o));
    }
    // A stable order: the same cells make the same message, which is then not resent.
    out.cells
        .sort_unstable_by(|x, y| x.0.total_cmp(&y.0).then(x.1.total_cmp(&y.1)));
    out.cells.truncate(max_cells);
    out
}

/// Tallies of the whole board per grid, shared by every browser with the default view,
/// recomputed at most once per `fresh_for`.
#[derive(Debug)]
pub struct CellCache {
    fresh_for: Duration,
    max_cells: usize,
    grids: Mutex<HashMap<Grid, (Instant, Arc<Tallies>)>>,
}

impl CellCache {
    /// Tallies stay `fresh_for` (a batch interval); a message holds at most `max_cells`.
    pub fn new(fresh_for: Duration, max_cells: usize) -> CellCache {
        CellCache {
            fresh_for,
            max_cells,
            grids: Mutex::new(HashMap::new()),
        }
    }

    /// What `view` holds on its grid, and the grid. The followed driver is not counted
    /// apart: the bridge sends it as a position.
    pub fn census(&self, board: &Board, view: &View) -> (Census, Grid) {
        let grid = Grid::for_view(view.viewport.as_ref());
        let plain = view.allowed.is_none() && view.filters == View::default().filters;
        if !plain {
            let own = View {
                follow: None,
                ..view.clone()
            };
            let tallies = tally(board, &own, grid);
            return (census(&tallies, grid, None, self.max_cells), grid);
        }
        let tallies = {
            let now = Instant::now();
            let mut grids = self.grids.lock().unwrap_or_else(|p| p.into_inner());
            match grids.get(&grid) {
                Some((at, t)) if now.duration_since(*at) < self.fresh_for => Arc::clone(t),
                _ => {
                    let everywhere = View::default();
                    let t = Arc::new(tally(board, &everywhere, grid));
                    // Grids no browser asked for lately are dropped: at most one per zoom.
                    grids.retain(|_, (at, _)| now.duration_since(*at) < self.fresh_for * 50);
                    grids.insert(grid, (now, Arc::clone(&t)));
                    t
                }
            }
        };
        (
            census(&tallies, grid, view.viewport.as_ref(), self.max_cells),
            grid,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::BoardConfig;
    use fleetcast_proto::Location;

    fn board(n: usize) -> Board {
        let b = Board::new(BoardConfig::default());
        let now = fleetcast_proto::time::now_ms();
        for i in 0..n {
            let id = format!("d{i}");
            let loc = Location {
                id: id.clone(),
                lat: 60.10 + (i % 100) as f64 * 0.001,
                lon: 24.80 + (i / 100) as f64 * 0.002,
                heading: 0.0,
                speed: 1.0,
                accuracy: 3.0,
                status: [Status::Available, Status::ToPickup, Status::OnTrip][i % 3],
                seq: 1,
                ts: now,
            };
            let body = serde_json::to_vec(&loc).expect("json");
            b.ingest(&format!("drivers/{id}/location"), &body, now);
        }
        b
    }

    #[test]
    fn the_grid_follows_the_view() {
        let city = Viewport::from_bbox([24.7, 60.1, 25.2, 60.3]);
        let street = Viewport::from_bbox([24.93, 60.16, 24.94, 60.165]);
        let (cx, cy) = Grid::for_view(city.as_ref()).size();
        let (sx, _) = Grid::for_view(street.as_ref()).size();
        assert!(sx < cx / 16.0, "{sx} {cx}");
        // About square on the map at 60 degrees north.
        assert_eq!(cy, cx / 2.0);
        assert!(0.5 / cx <= CELLS_ACROSS && 0.5 / cx > CELLS_ACROSS / 2.0);
        assert!(Grid::for_view(None).size().0 >= 360.0 / 64.0);
    }

    #[test]
    fn cells_count_every_driver_in_view_by_status() {
        let b = board(3_000);
        let cache = CellCache::new(Duration::from_millis(200), 10_000);
        let view = View {
            viewport: Viewport::from_bbox([24.7, 60.0, 25.2, 60.3]),
            ..View::default()
        };
        let (c, _) = cache.census(&b, &view);
        assert_eq!(c.drivers, 3_000);
        let by_status = c
            .cells
            .iter()
            .fold([0, 0, 0], |s, c| [s[0] + c.2, s[1] + c.3, s[2] + c.4]);
        assert_eq!(by_status, [1_000, 1_000, 1_000]);
        assert!(c.cells.len() < 48 * 48);
        // A view over a corner holds only the cells it touches.
        let corner = View {
            viewport: Viewport::from_bbox([24.79, 60.09, 24.81, 60.11]),
            ..View::default()
        };
        let (small, _) = cache.census(&b, &corner);
        assert!(
            small.drivers > 0 && small.drivers < 3_000,
            "{}",
            small.drivers
        );
        // A viewer limited to some drivers counts only those.
        let limited = View {
            allowed: Some(crate::board::Visibility {
                filters: vec!["drivers/d1/+".to_owned()].into(),
                account: "a".into(),
                expires_at: None,
                ends: None,
            }),
            ..view
        };
        assert_eq!(cache.census(&b, &limited).0.drivers, 1);
    }

    #[test]
    fn a_message_is_bounded_by_max_cells() {
        let b = board(3_000);
        let cache = CellCache::new(Duration::from_millis(200), 5);
        let view = View {
            viewport: Viewport::from_bbox([24.7, 60.0, 25.2, 60.3]),
            ..View::default()
        };
        let (c, _) = cache.census(&b, &view);
        assert_eq!(c.cells.len(), 5);
        assert_eq!(c.drivers, 3_000, "every driver counted");
    }
}
