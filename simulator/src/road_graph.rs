//! The drivable road network of a city, from an OpenStreetMap `.osm.pbf` extract.
//!
//! Only ways a car may drive are kept (by `highway=*` class, minus `access=no|private`,
//! `motor_vehicle=no` and areas); one-way streets get one directed edge, others two. Each
//! edge knows its length (haversine, from `geo`) and speed limit (`maxspeed`, else the road
//! class). The graph is then cut to its largest strongly connected component, so that every
//! node can reach every other and random destinations always have a route. Routes are A*
//! by travel time.

use geo::{Distance, Haversine, Point};
use petgraph::algo::{astar, tarjan_scc};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use std::collections::HashMap;

/// The default city (central Helsinki), embedded; see `simulator/data/README.md` (ODbL).
pub const HELSINKI_PBF: &[u8] = include_bytes!("../data/helsinki.osm.pbf");

/// Why a map could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The file could not be read.
    #[error("cannot read map {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a valid `.osm.pbf`.
    #[error("invalid OpenStreetMap PBF data")]
    Pbf(#[from] osmpbf::Error),
    /// The file at `path` is not a usable map.
    #[error("map {path}")]
    InFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: Box<MapError>,
    },
    /// Too few drivable roads to simulate on.
    #[error("the map has no connected drivable road network (found {0} nodes)")]
    TooSmall(usize),
}

/// A road edge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Road {
    /// Length, metres.
    pub length_m: f64,
    /// Speed limit, m/s.
    pub speed_mps: f64,
}

/// A directed graph of drivable roads; node weights are positions.
#[derive(Debug, Clone)]
pub struct RoadGraph {
    graph: DiGraph<Point, Road>,
    max_speed_mps: f64,
}

/// Speeds by road class when a way has no `maxspeed`, km/h (urban defaults).
fn class_speed_kmh(highway: &str) -> Option<f64> {
    Some(match highway {
        "motorway" => 100.0,
        "trunk" => 80.0,
        "primary" | "secondary" => 50.0,
        "tertiary" | "unclassified" => 40.0,
        "motorway_link" | "trunk_link" | "primary_link" | "secondary_link" | "tertiary_link" => {
            40.0
        }
        "residential" => 30.0,
        "service" => 20.0,
        "living_street" => 10.0,
        _ => return None,
    })
}

/// `maxspeed` values: `50`, `30 mph`, `FI:urban`, `none`...; None when not understood.
fn parse_maxspeed(v: &str) -> Option<f64> {
    let v = v.trim();
    if let Some(mph) = v.strip_suffix("mph") {
        return mph.trim().parse::<f64>().ok().map(|m| m * 1.609_344);
    }
    match v {
        "FI:urban" | "DE:urban" | "urban" => return Some(50.0),
        "FI:rural" | "rural" => return Some(80.0),
        "walk" | "DE:walk" => return Some(7.0),
        _ => {}
    }
    v.parse::<f64>().ok().filter(|s| *s > 0.0)
}

enum Direction {
    Both,
    Forward,
    Backward,
}

struct WayInfo {
    refs: Vec<i64>,
    speed_kmh: f64,
    direction: Direction,
}

fn drivable_way<'a>(tags: impl Iterator<Item = (&'a str, &'a str)>) -> Option<(f64, Direction)> {
    let tags: HashMap<&str, &str> = tags.collect();
    let highway = *tags.get("highway")?;
    let class = class_speed_kmh(highway)?;
    let denied = |k: &str| tags.get(k).is_some_and(|v| matches!(*v, "no" | "private"));
    if denied("access") || denied("motor_vehicle") || denied("motorcar") {
        return None;
    }
    if tags.get("area") == Some(&"yes") {
        return None;
    }
    let speed = tags
        .get("maxspeed")
        .and_then(|v| parse_maxspeed(v))
        .unwrap_or(class);
    let direction = match tags.get("oneway").copied() {
        Some("yes" | "true" | "1") => Direction::Forward,
        Some("-1" | "reverse") => Direction::Backward,
        Some("no" | "false" | "0") => Direction::Both,
        _ if tags
            .get("junction")
            .is_some_and(|j| matches!(*j, "roundabout" | "circular")) =>
        {
            Direction::Forward
        }
        _ if highway == "motorway" => Direction::Forward,
        _ => Direction::Both,
    };
    Some((speed, direction))
}

impl RoadGraph {
    /// The embedded default city.
    ///
    /// # Errors
    /// Only if the embedded data were corrupt (a test loads it).
    pub fn helsinki() -> Result<RoadGraph, MapError> {
        RoadGraph::from_pbf(HELSINKI_PBF)
    }

    /// Loads an `.osm.pbf` file.
    ///
    /// # Errors
    /// Unreadable file, invalid PBF, or no drivable network.
    pub fn from_file(path: &std::path::Path) -> Result<RoadGraph, MapError> {
        let bytes = std::fs::read(path).map_err(|source| MapError::Read {
            path: path.display().to_string(),
            source,
        })?;
        RoadGraph::from_pbf(&bytes).map_err(|e| match e {
            MapError::Read { .. } => e,
            other => MapError::InFile {
                path: path.display().to_string(),
                source: Box::new(other),
            },
        })
    }

    /// Builds the graph from `.osm.pbf` bytes.
    ///
    /// # Errors
    /// Invalid PBF or no drivable network.
    pub fn from_pbf(bytes: &[u8]) -> Result<RoadGraph, MapError> {
        let mut coords: HashMap<i64, Point> = HashMap::new();
        let mut ways: Vec<WayInfo> = Vec::new();
        let reader = osmpbf::ElementReader::new(std::io::Cursor::new(bytes));
        reader.for_each(|element| match element {
            osmpbf::Element::Node(n) => {
                coords.insert(n.id(), Point::new(n.lon(), n.lat()));
            }
            osmpbf::Element::DenseNode(n) => {
                coords.insert(n.id(), Point::new(n.lon(), n.lat()));
            }
            osmpbf::Element::Way(w) => {
                if let Some((speed_kmh, direction)) = drivable_way(w.tags()) {
                    ways.push(WayInfo {
                        refs: w.refs().collect(),
                        speed_kmh,
                        direction,
                    });
                }
            }
            osmpbf::Element::Relation(_) => {}
        })?;

        let mut graph: DiGraph<Point, Road> = DiGraph::new();
        let mut index: HashMap<i64, NodeIndex> = HashMap::new();
        for way in &ways {
            let speed_mps = way.speed_kmh / 3.6;
            // Ways cut by the extract's edge lose their outside nodes: skip those pairs.
            for pair in way.refs.windows(2) {
                let (Some(&a), Some(&b)) = (coords.get(&pair[0]), coords.get(&pair[1])) else {
                    continue;
                };
                if pair[0] == pair[1] {
                    continue;
                }
                let ia = *index.entry(pair[0]).or_insert_with(|| graph.add_node(a));
                let ib = *index.entry(pair[1]).or_insert_with(|| graph.add_node(b));
                let road = Road {
                    length_m: Haversine.distance(a, b).max(0.01),
                    speed_mps,
                };
                match way.direction {
                    Direction::Both => {
                        graph.add_edge(ia, ib, road);
                        graph.add_edge(ib, ia, road);
                    }
                    Direction::Forward => {
                        graph.add_edge(ia, ib, road);
                    }
                    Direction::Backward => {
                        graph.add_edge(ib, ia, road);
                    }
                }
            }
        }
        let found = graph.node_count();
        let graph = largest_component(graph);
        if graph.node_count() < 2 {
            return Err(MapError::TooSmall(found));
        }
        let max_speed_mps = graph
            .edge_weights()
            .map(|r| r.speed_mps)
            .fold(1.0, f64::max);
        Ok(RoadGraph {
            graph,
            max_speed_mps,
        })
    }

    /// Nodes in the graph.
    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    /// Directed edges in the graph.
    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    /// A node's position.
    pub fn position(&self, node: NodeIndex) -> Point {
        self.graph[node]
    }

    /// The node with this index number (`0..node_count()`).
    pub fn node(&self, i: usize) -> NodeIndex {
        NodeIndex::new(i % self.graph.node_count().max(1))
    }

    /// How many roads meet at a node (in and out), to find intersections.
    pub fn degree(&self, node: NodeIndex) -> usize {
        self.graph.neighbors_undirected(node).count()
    }

    /// Every directed road as (from, to, road).
    pub fn roads(&self) -> impl Iterator<Item = (Point, Point, Road)> + '_ {
        self.graph
            .edge_references()
            .map(|e| (self.graph[e.source()], self.graph[e.target()], *e.weight()))
    }

    /// The quickest route from `from` to `to` (A* on travel time), as the nodes passed.
    pub fn route(&self, from: NodeIndex, to: NodeIndex) -> Option<Vec<NodeIndex>> {
        let goal = self.graph[to];
        let max_speed = self.max_speed_mps;
        astar(
            &self.graph,
            from,
            |n| n == to,
            |e| e.weight().length_m / e.weight().speed_mps,
            |n| Haversine.distance(self.graph[n], goal) / max_speed,
        )
        .map(|(_, path)| path)
    }

    /// The road from `a` to `b`, if there is one.
    pub fn road(&self, a: NodeIndex, b: NodeIndex) -> Option<Road> {
        self.graph.find_edge(a, b).map(|e| self.graph[e])
    }

    /// The bounding box of the network: (min lon, min lat, max lon, max lat).
    pub fn bounds(&self) -> (f64, f64, f64, f64) {
        self.graph.node_weights().fold(
            (f64::MAX, f64::MAX, f64::MIN, f64::MIN),
            |(a, b, c, d), p| (a.min(p.x()), b.min(p.y()), c.max(p.x()), d.max(p.y())),
        )
    }
}

/// Keeps only the largest strongly connected component.
fn largest_component(graph: DiGraph<Point, Road>) -> DiGraph<Point, Road> {
    let Some(keep) = tarjan_scc(&graph).into_iter().max_by_key(Vec::len) else {
        return graph;
    };
    let mut inside = vec![false; graph.node_count()];
    for n in keep {
        inside[n.index()] = true;
    }
    graph.filter_map(|n, p| inside[n.index()].then_some(*p), |_, r| Some(*r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helsinki_loads_as_one_connected_network() {
        let g = RoadGraph::helsinki().expect("embedded map");
        assert!(g.node_count() > 500, "{} nodes", g.node_count());
        assert!(g.edge_count() > g.node_count(), "{} edges", g.edge_count());
        let (w, s, e, n) = g.bounds();
        assert!(
            w > 24.9 && e < 24.97 && s > 60.15 && n < 60.19,
            "{w} {s} {e} {n}"
        );
        // Strongly connected: any node reaches any other.
        let last = g.node(g.node_count() - 1);
        assert!(g.route(g.node(0), last).is_some());
        assert!(g.route(last, g.node(0)).is_some());
    }

    #[test]
    fn routes_follow_existing_roads_and_respect_one_way_streets() {
        let g = RoadGraph::helsinki().expect("embedded map");
        for i in 0..50 {
            let (a, b) = (g.node(i * 37), g.node(i * 101 + 13));
            let path = g.route(a, b).expect("route");
            assert_eq!(path.first(), Some(&a));
            assert_eq!(path.last(), Some(&b));
            for w in path.windows(2) {
                assert!(
                    g.road(w[0], w[1]).is_some(),
                    "no road {:?} -> {:?}",
                    w[0],
                    w[1]
                );
            }
        }
        // One-way streets exist in the data and have no reverse edge.
        let oneway = g
            .graph
            .edge_references()
            .filter(|e| g.graph.find_edge(e.target(), e.source()).is_none())
            .count();
        assert!(oneway > 10, "{oneway} one-way edges");
    }

    #[test]
    fn maxspeed_and_tags() {
        assert_eq!(parse_maxspeed("50"), Some(50.0));
        assert_eq!(parse_maxspeed("FI:urban"), Some(50.0));
        assert!((parse_maxspeed("30 mph").unwrap_or(0.0) - 48.28).abs() < 0.01);
        assert_eq!(parse_maxspeed("signals"), None);
        assert!(drivable_way([("highway", "footway")].into_iter()).is_none());
        assert!(
            drivable_way([("highway", "residential"), ("access", "private")].into_iter()).is_none()
        );
        let (speed, dir) =
            drivable_way([("highway", "primary"), ("oneway", "-1")].into_iter()).expect("drivable");
        assert_eq!(speed, 50.0);
        assert!(matches!(dir, Direction::Backward));
    }
}
