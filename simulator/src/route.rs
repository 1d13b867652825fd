//! A route: the polyline a driver follows, with the speed it may go at each point.
//!
//! Built from a road-graph path. Each segment carries its road's speed limit; each vertex a
//! turn cap (the sharper the turn, the slower), and the end a cap of zero. [`Route::allowed_speed`]
//! is the highest speed from which a driver can still brake, at a comfortable deceleration,
//! to every cap ahead, which is how drivers slow for turns and stop at the end.

use crate::road_graph::RoadGraph;
use geo::{Bearing, Distance, Haversine, InterpolatePoint, Point};
use petgraph::graph::NodeIndex;

/// Lowest speed for a sharp turn, m/s.
const MIN_TURN_SPEED: f64 = 2.5;
/// How far ahead caps are considered, metres (braking from 30 m/s at 2 m/s^2 takes 225 m).
const LOOKAHEAD_M: f64 = 300.0;

/// A path along the road network.
#[derive(Debug, Clone)]
pub struct Route {
    points: Vec<Point>,
    /// Distance from the start to each point, metres.
    cum: Vec<f64>,
    /// Speed limit of segment i (points[i] -> points[i+1]), m/s.
    limits: Vec<f64>,
    /// Highest speed when passing point i, m/s.
    caps: Vec<f64>,
    /// Heading of segment i, degrees.
    headings: Vec<f64>,
    /// The graph nodes passed.
    nodes: Vec<NodeIndex>,
}

/// The change of direction between two headings, degrees in [0, 180].
pub fn turn_angle(from: f64, to: f64) -> f64 {
    ((to - from).rem_euclid(360.0) - 180.0)
        .abs()
        .mul_add(-1.0, 180.0)
}

impl Route {
    /// The route along `path`; None when it has fewer than two nodes or a missing road.
    pub fn new(graph: &RoadGraph, path: &[NodeIndex]) -> Option<Route> {
        if path.len() < 2 {
            return None;
        }
        let points: Vec<Point> = path.iter().map(|&n| graph.position(n)).collect();
        let mut cum = Vec::with_capacity(points.len());
        let mut limits = Vec::with_capacity(points.len() - 1);
        let mut headings = Vec::with_capacity(points.len() - 1);
        let mut total = 0.0;
        cum.push(0.0);
        for (i, w) in path.windows(2).enumerate() {
            let road = graph.road(w[0], w[1])?;
            total += Haversine.distance(points[i], points[i + 1]);
            cum.push(total);
            limits.push(road.speed_mps);
            headings.push(Haversine.bearing(points[i], points[i + 1]));
        }
        let mut caps = vec![0.0; points.len()];
        for i in 1..points.len() - 1 {
            let limit = limits[i - 1].min(limits[i]);
            let angle = turn_angle(headings[i - 1], headings[i]);
            let factor = (1.0 - angle / 180.0).powf(1.5);
            caps[i] = (limit * factor).clamp(MIN_TURN_SPEED.min(limit), limit);
        }
        caps[0] = limits[0];
        // caps[last] stays 0: the driver stops at the destination.
        Some(Route {
            points,
            cum,
            limits,
            caps,
            headings,
            nodes: path.to_vec(),
        })
    }

    /// Total length, metres.
    pub fn length(&self) -> f64 {
        self.cum.last().copied().unwrap_or(0.0)
    }

    /// The last node.
    pub fn end(&self) -> NodeIndex {
        self.nodes[self.nodes.len() - 1]
    }

    /// The graph nodes passed, in order.
    pub fn nodes(&self) -> &[NodeIndex] {
        &self.nodes
    }

    /// Distance from the start of each vertex, metres.
    pub fn vertex_distances(&self) -> &[f64] {
        &self.cum
    }

    /// The segment holding distance `s`.
    fn segment(&self, s: f64) -> usize {
        let i = self.cum.partition_point(|&c| c <= s);
        i.saturating_sub(1).min(self.limits.len() - 1)
    }

    /// The point at distance `s` from the start.
    pub fn position(&self, s: f64) -> Point {
        let s = s.clamp(0.0, self.length());
        let i = self.segment(s);
        let len = self.cum[i + 1] - self.cum[i];
        if len <= 0.0 {
            return self.points[i];
        }
        Haversine.point_at_ratio_between(
            self.points[i],
            self.points[i + 1],
            (s - self.cum[i]) / len,
        )
    }

    /// Direction of travel at `s`, degrees.
    pub fn heading(&self, s: f64) -> f64 {
        self.headings[self.segment(s)]
    }

    /// Speed limit at `s`, m/s.
    pub fn limit(&self, s: f64) -> f64 {
        self.limits[self.segment(s)]
    }

    /// Highest speed at `s` that can still brake at `decel` m/s^2 to every cap ahead
    /// (turns, the stop at the end).
    pub fn allowed_speed(&self, s: f64, decel: f64) -> f64 {
        let mut allowed = self.limit(s);
        let first = self.segment(s) + 1;
        for i in first..self.points.len() {
            let d = self.cum[i] - s;
            if d > LOOKAHEAD_M {
                break;
            }
            allowed = allowed.min((self.caps[i].powi(2) + 2.0 * decel * d.max(0.0)).sqrt());
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_angles() {
        assert!((turn_angle(10.0, 10.0)).abs() < 1e-9);
        assert!((turn_angle(350.0, 10.0) - 20.0).abs() < 1e-9);
        assert!((turn_angle(0.0, 90.0) - 90.0).abs() < 1e-9);
        assert!((turn_angle(0.0, 180.0) - 180.0).abs() < 1e-9);
        assert!((turn_angle(90.0, 0.0) - 90.0).abs() < 1e-9);
    }

    #[test]
    fn positions_run_along_the_polyline_and_speed_falls_to_zero_at_the_end() {
        let g = RoadGraph::helsinki().expect("map");
        let path = g.route(g.node(3), g.node(400)).expect("route");
        let r = Route::new(&g, &path).expect("route");
        assert!(r.length() > 0.0);
        // Sampled every metre, positions move at most ~1 m apart.
        let mut prev = r.position(0.0);
        let mut s = 1.0;
        while s < r.length() {
            let p = r.position(s);
            assert!(Haversine.distance(prev, p) < 1.05, "jump at {s}");
            prev = p;
            s += 1.0;
        }
        assert!(Haversine.distance(r.position(r.length()), g.position(r.end())) < 0.01);
        assert!(r.allowed_speed(r.length(), 2.0) < 1e-9);
        assert!(r.allowed_speed(r.length() - 25.0, 2.0) <= 10.0 + 1e-9);
    }
}
