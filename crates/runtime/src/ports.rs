//! Every service's default HTTP port, in one table, so that services started side by side on
//! one machine with their defaults never collide. Each service's settings test checks its
//! embedded default against this table; the README lists the same table.

/// `(service, port)` for every service, including those still to be built.
pub const DEFAULT_PORTS: &[(&str, u16)] = &[
    ("webhook", 8080),
    ("delta-worker", 8081),
    ("card-writer", 8082),
    ("admin-api", 8083),
    ("subscription-manager", 8084),
    ("reconciler", 8085),
];

/// The default port of `service`, if it is one of cardsync's.
pub fn default_port(service: &str) -> Option<u16> {
    DEFAULT_PORTS
        .iter()
        .find(|(name, _)| *name == service)
        .map(|(_, port)| *port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn no_two_services_share_a_default_port() {
        let ports: HashSet<u16> = DEFAULT_PORTS.iter().map(|(_, port)| *port).collect();
        assert_eq!(ports.len(), DEFAULT_PORTS.len(), "{DEFAULT_PORTS:?}");
    }

    #[test]
    fn a_service_finds_its_port_and_a_stranger_none() {
        assert_eq!(default_port("card-writer"), Some(8082));
        assert_eq!(default_port("nobody"), None);
    }
}
