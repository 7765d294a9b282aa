//! Region paths and search scopes: which nodes a prefix covers, and which aggregator a
//! search or a feed goes to. Pure rules, no IO; `services::search` applies them.
//!
//! A region is a path of segments (`earth/africa/ng/lagos`). A prefix covers a region
//! segment by segment, never by characters: `earth/x` covers `earth/x` and
//! `earth/x/a`, not `earth/xy`. An aggregator aggregates the prefix equal to its own
//! region.

use crate::core::model::NodeId;

/// Most segments in a region path.
pub const REGION_SEGMENTS_MAX: usize = 8;
/// Longest region path, in bytes.
pub const REGION_BYTES_MAX: usize = 128;
/// Longest segment, in bytes.
const SEGMENT_BYTES_MAX: usize = 32;

/// A valid region path: 1 to `REGION_SEGMENTS_MAX` segments of `a-z`, `0-9`, `-`, `_`,
/// joined by `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Region(String);

impl Region {
    /// Parses a region path; a trailing `/` is allowed and dropped, case is folded.
    pub fn parse(text: &str) -> Result<Region, InvalidRegion> {
        let text = text.trim().trim_end_matches('/').to_ascii_lowercase();
        if text.is_empty() || text.len() > REGION_BYTES_MAX {
            return Err(InvalidRegion { text });
        }
        let segments: Vec<&str> = text.split('/').collect();
        let segment_ok = |segment: &&str| {
            !segment.is_empty()
                && segment.len() <= SEGMENT_BYTES_MAX
                && segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        if segments.len() > REGION_SEGMENTS_MAX || !segments.iter().all(segment_ok) {
            return Err(InvalidRegion { text });
        }
        Ok(Region(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    pub fn depth(&self) -> usize {
        self.segments().count()
    }

    /// Whether `self`, as a prefix, covers `region` (segment by segment).
    pub fn covers(&self, region: &Region) -> bool {
        let mut inner = region.segments();
        self.segments().all(|segment| inner.next() == Some(segment))
    }

    /// Whether `self` covers `region` and is wider than it.
    pub fn strictly_covers(&self, region: &Region) -> bool {
        self.depth() < region.depth() && self.covers(region)
    }
}

/// Text that is not a region path (as folded by `Region::parse`); the message states
/// the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a region: a region is 1 to {REGION_SEGMENTS_MAX} segments of a-z, 0-9, - and _ joined by / \
     (e.g. earth/africa/ng/lagos), at most {REGION_BYTES_MAX} bytes"
)]
pub struct InvalidRegion {
    pub text: String,
}

impl std::fmt::Display for Region {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Where a search looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// This node's own store (every visibility rule applies; the default).
    Node,
    /// This node and its siblings.
    Neighbourhood,
    /// Every node whose region the prefix covers, through an aggregator.
    Region(Region),
}

impl Scope {
    /// `node` (also when absent), `neighbourhood`, or a region prefix.
    pub fn parse(text: Option<&str>) -> Result<Scope, InvalidScope> {
        match text.map(str::trim) {
            None | Some("") | Some("node") => Ok(Scope::Node),
            Some("neighbourhood") => Ok(Scope::Neighbourhood),
            Some(prefix) => Region::parse(prefix).map(Scope::Region).map_err(InvalidScope),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Scope::Node => "node".to_owned(),
            Scope::Neighbourhood => "neighbourhood".to_owned(),
            Scope::Region(region) => region.to_string(),
        }
    }
}

/// A scope that is neither `node`, `neighbourhood` nor a region prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope must be node, neighbourhood or a region prefix: {0}")]
pub struct InvalidScope(pub InvalidRegion);

/// What this node knows of another: its region (if it has one) and whether it
/// aggregates that region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub node_id: NodeId,
    pub region: Option<Region>,
    pub aggregator: bool,
}

/// Aggregators that can answer a search over `prefix`, best first: the tightest
/// (deepest) region covering the prefix first, ties by node id (so every node asks
/// the same one first).
pub fn aggregators_for(prefix: &Region, known: &[Known]) -> Vec<NodeId> {
    let mut candidates: Vec<(usize, NodeId)> = known
        .iter()
        .filter(|node| node.aggregator)
        .filter_map(|node| {
            let region = node.region.as_ref()?;
            region.covers(prefix).then(|| (region.depth(), node.node_id))
        })
        .collect();
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    candidates.into_iter().map(|(_, node_id)| node_id).collect()
}

/// Aggregators a node at `own` feeds, best first (try the next when one is down). A
/// plain node feeds the tightest aggregator covering its region; an aggregator feeds
/// the next wider one, never one of its own depth, so feeding never goes in circles.
pub fn feed_targets(own: &Region, own_is_aggregator: bool, own_id: NodeId, known: &[Known]) -> Vec<NodeId> {
    let mut targets = aggregators_for(own, known);
    targets.retain(|node_id| *node_id != own_id);
    if own_is_aggregator {
        targets.retain(|node_id| {
            known
                .iter()
                .find(|node| node.node_id == *node_id)
                .and_then(|node| node.region.as_ref())
                .is_some_and(|region| region.strictly_covers(own))
        });
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(text: &str) -> Region {
        Region::parse(text).unwrap()
    }

    fn known(id: u64, region_text: &str, aggregator: bool) -> Known {
        Known { node_id: NodeId(id), region: Some(region(region_text)), aggregator }
    }

    #[test]
    fn regions_parse_and_fold_case() {
        assert_eq!(region("Earth/Africa/ng/lagos/").as_str(), "earth/africa/ng/lagos");
        for bad in ["", "/", "earth//x", "/earth", "earth/x y", "earth/ü", &"a/".repeat(9), &"a".repeat(40)] {
            assert!(Region::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Region::parse("Earth//X").unwrap_err().to_string(),
            "\"earth//x\" is not a region: a region is 1 to 8 segments of a-z, 0-9, - and _ joined by / \
             (e.g. earth/africa/ng/lagos), at most 128 bytes"
        );
    }

    #[test]
    fn prefixes_cover_by_segments_not_characters() {
        assert!(region("earth/x").covers(&region("earth/x")));
        assert!(region("earth/x").covers(&region("earth/x/a")));
        assert!(region("earth").covers(&region("earth/x/a")));
        assert!(!region("earth/x").covers(&region("earth/xy")));
        assert!(!region("earth/x/a").covers(&region("earth/x")));
        assert!(!region("earth/x").strictly_covers(&region("earth/x")));
        assert!(region("earth").strictly_covers(&region("earth/x")));
    }

    #[test]
    fn scopes_parse() {
        assert_eq!(Scope::parse(None), Ok(Scope::Node));
        assert_eq!(Scope::parse(Some("node")), Ok(Scope::Node));
        assert_eq!(Scope::parse(Some("neighbourhood")), Ok(Scope::Neighbourhood));
        assert_eq!(Scope::parse(Some("earth/x")), Ok(Scope::Region(region("earth/x"))));
        assert!(Scope::parse(Some("earth//x")).unwrap_err().to_string().contains("scope must be"));
    }

    #[test]
    fn searches_go_to_the_tightest_covering_aggregator_first() {
        let nodes = [
            known(1, "earth", true),
            known(2, "earth/x", true),
            known(3, "earth/x/a", false),
            known(4, "earth/xy", true),
            known(5, "earth/x/a", true),
            known(6, "earth/x", true),
            Known { node_id: NodeId(7), region: None, aggregator: true },
        ];
        assert_eq!(aggregators_for(&region("earth/x/a/b"), &nodes), vec![NodeId(5), NodeId(2), NodeId(6), NodeId(1)]);
        assert_eq!(aggregators_for(&region("earth/x"), &nodes), vec![NodeId(2), NodeId(6), NodeId(1)]);
        assert_eq!(aggregators_for(&region("earth/xy/z"), &nodes), vec![NodeId(4), NodeId(1)]);
        assert_eq!(aggregators_for(&region("mars"), &nodes), Vec::<NodeId>::new());
    }

    #[test]
    fn plain_nodes_feed_the_nearest_aggregator_and_aggregators_the_next_wider() {
        let nodes = [known(1, "earth", true), known(2, "earth/x", true), known(3, "earth/x", true)];
        assert_eq!(feed_targets(&region("earth/x/a"), false, NodeId(9), &nodes), vec![NodeId(2), NodeId(3), NodeId(1)]);
        // An aggregator for earth/x feeds earth, never itself or its twin.
        assert_eq!(feed_targets(&region("earth/x"), true, NodeId(2), &nodes), vec![NodeId(1)]);
        assert_eq!(feed_targets(&region("earth"), true, NodeId(1), &nodes), Vec::<NodeId>::new());
        // A plain node at an aggregator's own region feeds it.
        assert_eq!(feed_targets(&region("earth/x"), false, NodeId(9), &nodes), vec![NodeId(2), NodeId(3), NodeId(1)]);
    }
}
