//! One simulated driver: where it goes, how it moves, what its GPS reports.
//!
//! Ride-hailing states change at trip ends: `available` drivers cruise to random places and
//! now and then get a request (`to_pickup`), wait at the pickup, carry the rider (`on_trip`)
//! and drop them off. Driving follows the [`Route`]: accelerate gently, brake for turns and
//! for the destination, stop now and then at intersections (lights). Fixes carry Gaussian
//! GPS noise whose scale is reported as `accuracy`. Everything random comes from one seeded
//! RNG per driver, so a `--seed` replays the same fleet.

use crate::road_graph::RoadGraph;
use crate::route::Route;
use fleetcast_proto::Status;
use geo::{Destination, Distance, Haversine, Point};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::sync::Arc;

/// Comfortable acceleration, m/s^2.
const ACCEL: f64 = 1.5;
/// Deceleration planned for (turns, stops), m/s^2.
const DECEL: f64 = 2.0;
/// Hardest braking allowed when a plan changes, m/s^2.
const BRAKE: f64 = 4.0;
/// Longest simulation step, seconds.
const STEP: f64 = 0.25;
/// Below this speed a GPS heading is noise: keep the last one.
const HEADING_MIN_SPEED: f64 = 0.5;

/// A position report before it becomes a payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    /// Latitude with GPS noise.
    pub lat: f64,
    /// Longitude with GPS noise.
    pub lon: f64,
    /// Degrees clockwise from north.
    pub heading: f64,
    /// m/s.
    pub speed: f64,
    /// Metres.
    pub accuracy: f64,
    /// Ride-hailing state.
    pub status: Status,
}

/// A driver's movement model.
#[derive(Debug)]
pub struct Driver {
    graph: Arc<RoadGraph>,
    rng: StdRng,
    noise: Normal<f64>,
    noise_m: f64,
    status: Status,
    route: Route,
    /// Distance along the route, metres.
    s: f64,
    /// Speed, m/s.
    v: f64,
    heading: f64,
    /// Simulated time, seconds.
    t: f64,
    /// Standing still until this time (pickup, drop-off, a red light).
    dwell_until: f64,
    /// Distances along the route of planned stops at intersections, soonest last.
    stops: Vec<f64>,
    /// This driver's share of the limit (some drive slower than others).
    temper: f64,
}

impl Driver {
    /// A driver at a random node of `graph`, available, with GPS noise of scale `noise_m`.
    pub fn new(graph: Arc<RoadGraph>, seed: u64, noise_m: f64) -> Driver {
        let mut rng = StdRng::seed_from_u64(seed);
        let start = graph.node(rng.random_range(0..graph.node_count()));
        let route = plan(&graph, &mut rng, start, 0.0);
        let heading = route.heading(0.0);
        let noise_m = if noise_m.is_finite() {
            noise_m.max(0.0)
        } else {
            0.0
        };
        let sigma = (noise_m / std::f64::consts::SQRT_2).max(f64::MIN_POSITIVE);
        let mut d = Driver {
            noise: Normal::new(0.0, sigma).unwrap_or_else(|_| unreachable_normal()),
            noise_m,
            status: Status::Available,
            s: 0.0,
            v: 0.0,
            heading,
            t: 0.0,
            dwell_until: 0.0,
            stops: Vec::new(),
            temper: rng.random_range(0.85..1.0),
            route,
            graph,
            rng,
        };
        d.plan_stops();
        // Spread drivers out along their first route, so a fresh fleet is not parked.
        d.s = d.rng.random_range(0.0..d.route.length() * 0.8);
        d.stops.retain(|&x| x > d.s);
        d
    }

    /// Moves the simulation on by `dt` seconds.
    pub fn advance(&mut self, dt: f64) {
        let mut left = dt.max(0.0);
        while left > 1e-9 {
            let step = left.min(STEP);
            self.step(step);
            left -= step;
        }
    }

    fn step(&mut self, dt: f64) {
        self.t += dt;
        if self.t < self.dwell_until {
            self.v = 0.0;
            return;
        }
        if self.s >= self.route.length() - 0.05 {
            self.arrive();
            return;
        }
        let mut target =
            (self.route.limit(self.s) * self.temper).min(self.route.allowed_speed(self.s, DECEL));
        if let Some(&stop) = self.stops.last() {
            let d = stop - self.s;
            if d <= 0.5 {
                self.stops.pop();
                self.v = 0.0;
                self.dwell_until = self.t + self.rng.random_range(4.0..20.0);
                return;
            }
            target = target.min((2.0 * DECEL * d).sqrt());
        }
        self.v = if self.v < target {
            (self.v + ACCEL * dt).min(target)
        } else {
            (self.v - BRAKE * dt).max(target)
        };
        self.s = (self.s + self.v * dt).min(self.route.length());
        if self.v > HEADING_MIN_SPEED {
            self.heading = self.route.heading(self.s);
        }
    }

    fn arrive(&mut self) {
        self.v = 0.0;
        let here = self.route.end();
        let (status, dwell) = match self.status {
            Status::Available if self.rng.random_bool(0.5) => {
                (Status::ToPickup, self.rng.random_range(0.0..3.0))
            }
            Status::Available => (Status::Available, self.rng.random_range(0.0..3.0)),
            Status::ToPickup => (Status::OnTrip, self.rng.random_range(15.0..45.0)),
            Status::OnTrip => (Status::Available, self.rng.random_range(10.0..30.0)),
        };
        // Riders go somewhere worth a ride: at least 400 m away, when the map allows.
        let min_trip = if status == Status::OnTrip { 400.0 } else { 0.0 };
        self.status = status;
        self.dwell_until = self.t + dwell;
        self.route = plan(&self.graph, &mut self.rng, here, min_trip);
        self.s = 0.0;
        self.plan_stops();
    }

    fn plan_stops(&mut self) {
        let mut stops = Vec::new();
        let nodes = self.route.nodes();
        let at = self.route.vertex_distances();
        for i in 1..nodes.len().saturating_sub(1) {
            // Four or more roads in and out: an intersection; sometimes its light is red.
            if self.graph.degree(nodes[i]) >= 6 && self.rng.random_bool(0.2) {
                stops.push(at[i]);
            }
        }
        stops.reverse();
        self.stops = stops;
    }

    /// The true position (no GPS noise).
    pub fn position(&self) -> Point {
        self.route.position(self.s)
    }

    /// Current speed, m/s.
    pub fn speed(&self) -> f64 {
        self.v
    }

    /// Current state.
    pub fn status(&self) -> Status {
        self.status
    }

    /// A GPS fix of the current position.
    pub fn fix(&mut self) -> Fix {
        let p = self.position();
        let (east, north) = (
            self.noise.sample(&mut self.rng),
            self.noise.sample(&mut self.rng),
        );
        let offset = east.hypot(north);
        let noisy = if self.noise_m > 0.0 && offset > 0.0 {
            let bearing = east.atan2(north).to_degrees().rem_euclid(360.0);
            Haversine.destination(p, bearing, offset)
        } else {
            p
        };
        Fix {
            lat: noisy.y(),
            lon: noisy.x(),
            heading: self.heading.rem_euclid(360.0),
            speed: self.v,
            accuracy: self.noise_m,
            status: self.status,
        }
    }
}

/// A route from `from` to a random node at least `min_m` metres away when possible.
fn plan(
    graph: &RoadGraph,
    rng: &mut StdRng,
    from: petgraph::graph::NodeIndex,
    min_m: f64,
) -> Route {
    let origin = graph.position(from);
    let mut fallback = None;
    for _ in 0..20 {
        let to = graph.node(rng.random_range(0..graph.node_count()));
        if to == from {
            continue;
        }
        let Some(route) = graph.route(from, to).and_then(|p| Route::new(graph, &p)) else {
            continue;
        };
        if Haversine.distance(origin, graph.position(to)) >= min_m {
            return route;
        }
        fallback = Some(route);
    }
    // The graph is strongly connected with at least two nodes, so some neighbour works.
    fallback.unwrap_or_else(|| {
        (0..graph.node_count())
            .map(|i| graph.node(i))
            .filter(|&n| n != from)
            .find_map(|to| graph.route(from, to).and_then(|p| Route::new(graph, &p)))
            .unwrap_or_else(unreachable_route)
    })
}

#[cold]
fn unreachable_normal() -> Normal<f64> {
    // Normal::new fails only for a non-finite or negative sigma, which `new` rules out.
    Normal::new(0.0, 1.0).unwrap_or_else(|_| unreachable!("N(0,1) is valid"))
}

#[cold]
fn unreachable_route() -> Route {
    unreachable!("RoadGraph guarantees a strongly connected graph of at least two nodes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{Closest, ClosestPoint, Euclidean, Line};

    fn graph() -> Arc<RoadGraph> {
        Arc::new(RoadGraph::helsinki().expect("map"))
    }

    /// Distance in metres from `p` to the nearest road, in a local flat projection.
    fn to_nearest_road(g: &RoadGraph, p: Point) -> f64 {
        let k = p.y().to_radians().cos();
        let project = |q: Point| Point::new(q.x() * 111_320.0 * k, q.y() * 110_574.0);
        let pp = project(p);
        g.roads()
            .map(|(a, b, _)| {
                let line = Line::new(project(a), project(b));
                match line.closest_point(&pp) {
                    Closest::Intersection(c) | Closest::SinglePoint(c) => Euclidean.distance(c, pp),
                    Closest::Indeterminate => f64::MAX,
                }
            })
            .fold(f64::MAX, f64::min)
    }

    #[test]
    fn fixes_stay_on_roads_beyond_the_gps_noise() {
        let g = graph();
        for seed in 0..5 {
            let mut d = Driver::new(Arc::clone(&g), seed, 0.0);
            for _ in 0..300 {
                d.advance(1.0);
                let f = d.fix();
                let off = to_nearest_road(&g, Point::new(f.lon, f.lat));
                assert!(off < 1.0, "seed {seed}: {off:.2} m off the road");
            }
        }
        // With 3 m of noise, points stay within a few sigma.
        let mut d = Driver::new(Arc::clone(&g), 99, 3.0);
        for _ in 0..300 {
            d.advance(1.0);
            let f = d.fix();
            assert!(to_nearest_road(&g, Point::new(f.lon, f.lat)) < 15.0);
            assert_eq!(f.accuracy, 3.0);
        }
    }

    #[test]
    fn consecutive_fixes_imply_a_plausible_speed_and_the_car_moves() {
        let g = graph();
        for seed in 0..10 {
            let mut d = Driver::new(Arc::clone(&g), seed, 0.0);
            let mut prev = d.position();
            let mut travelled = 0.0;
            let mut moving = 0;
            for _ in 0..600 {
                d.advance(1.0);
                let p = d.position();
                let step = Haversine.distance(prev, p);
                assert!(step < 40.0, "seed {seed}: {step:.1} m in one second");
                assert!(d.speed() <= 100.0 / 3.6 + 1e-9);
                travelled += step;
                if d.speed() > 1.0 {
                    moving += 1;
                }
                prev = p;
            }
            assert!(
                travelled > 500.0,
                "seed {seed}: only {travelled:.0} m in 10 min"
            );
            assert!(moving > 100, "seed {seed}: moving {moving} s of 600");
        }
    }

    #[test]
    fn statuses_cycle_through_a_ride() {
        let g = graph();
        let mut d = Driver::new(g, 7, 3.0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 * 3600 {
            d.advance(1.0);
            seen.insert(d.status());
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
    }

    #[test]
    fn same_seed_same_drive() {
        let g = graph();
        let mut a = Driver::new(Arc::clone(&g), 42, 3.0);
        let mut b = Driver::new(Arc::clone(&g), 42, 3.0);
        for _ in 0..120 {
            a.advance(1.0);
            b.advance(1.0);
            assert_eq!(a.fix(), b.fix());
        }
        let mut c = Driver::new(g, 43, 3.0);
        c.advance(1.0);
        a.advance(1.0);
        assert_ne!(a.fix(), c.fix());
    }
}
