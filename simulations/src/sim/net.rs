//! The simulated network between each edge node and the head office: per-frame loss,
//! duplication and delay (random delays reorder frames), and a link state that changes
//! over time: up, fully cut, cut one way, or flapping.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{DAY, Faults, HOUR, MINUTE, What, World};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
    /// Frames towards the office are lost (or, if false, towards the edge).
    OneWay {
        to_office_lost: bool,
    },
}

#[derive(Debug)]
pub struct Link {
    pub state: State,
    pub drop_pct: u32,
    pub dup_pct: u32,
    pub delay_ms: (i64, i64),
    faults: Faults,
    /// Bumped on every (dis)connection: frames of an older connection are discarded.
    pub epoch: u64,
    /// Flapping: remaining quick toggles.
    flaps: u32,
    pub cuts: u64,
}

impl Link {
    pub fn new(faults: Faults) -> Link {
        let (drop_pct, dup_pct, delay_ms) = match faults {
            Faults::None => (0, 0, (1, 5)),
            Faults::Light => (1, 1, (2, 40)),
            Faults::Heavy => (10, 5, (5, 400)),
        };
        Link { state: State::Up, drop_pct, dup_pct, delay_ms, faults, epoch: 0, flaps: 0, cuts: 0 }
    }

    /// Delays of the copies of one frame that arrive (none if it is lost).
    pub fn deliveries(&self, rng: &mut ChaCha8Rng, to_office: bool) -> Vec<i64> {
        match self.state {
            State::Down => return Vec::new(),
            State::OneWay { to_office_lost } if to_office_lost == to_office => return Vec::new(),
            _ => {}
        }
        if rng.random_range(0..100) < self.drop_pct {
            return Vec::new();
        }
        let mut out = vec![rng.random_range(self.delay_ms.0..=self.delay_ms.1)];
        if rng.random_range(0..100) < self.dup_pct {
            out.push(rng.random_range(self.delay_ms.0..=self.delay_ms.1));
        }
        out
    }

    /// The end of the run: a clean, fast link.
    pub fn heal(&mut self) {
        self.state = State::Up;
        self.drop_pct = 0;
        self.dup_pct = 0;
        self.delay_ms = (1, 20);
        self.flaps = 0;
    }
}

/// A link's state changes; the next change is scheduled.
pub fn change(w: &mut World, link: usize) -> anyhow::Result<()> {
    let faults = w.links[link].faults;
    let edge_up = w.nodes[link + 1].down_until <= w.now;
    let was = w.links[link].state;
    let (next_state, stay_ms) = if faults == Faults::None {
        (State::Up, 30 * DAY)
    } else if w.links[link].flaps > 0 {
        w.links[link].flaps -= 1;
        let s = if was == State::Up { State::Down } else { State::Up };
        (s, w.rng.random_range(2_000..60_000))
    } else if was != State::Up {
        let up_for = match faults {
            Faults::Heavy => w.rng.random_range(10 * MINUTE..8 * HOUR),
            _ => w.rng.random_range(2 * HOUR..2 * DAY),
        };
        (State::Up, up_for)
    } else {
        let roll = w.rng.random_range(0..10);
        let down_for = match faults {
            // Now and then a cut lasts a day or two (a station offline over a weekend).
            Faults::Heavy if w.rng.random_range(0..10) == 0 => w.rng.random_range(12 * HOUR..2 * DAY),
            Faults::Heavy => w.rng.random_range(MINUTE..6 * HOUR),
            _ => w.rng.random_range(MINUTE..2 * HOUR),
        };
        match roll {
            0..=5 => (State::Down, down_for),
            6..=7 => (State::OneWay { to_office_lost: w.rng.random_bool(0.5) }, down_for),
            _ => {
                w.links[link].flaps = w.rng.random_range(4..20);
                (State::Down, w.rng.random_range(2_000..60_000))
            }
        }
    };
    w.links[link].state = next_state;
    if next_state != State::Up {
        w.links[link].cuts += 1;
    }
    match (next_state, edge_up) {
        // A full cut breaks the connection; a one-way cut keeps it (and stalls it).
        (State::Down, _) => w.disconnect(link),
        (State::Up | State::OneWay { .. }, true) if w.sessions[link].is_none() => w.connect(link)?,
        _ => {}
    }
    w.schedule(w.now + stay_ms, What::LinkChange { link });
    Ok(())
}
