//! The URL paths and file locations both sides agree on. Pure string building, no IO.

/// Where carte-init leaves the plan for carte-shim, as seen from inside the target root
/// (the initramfs writes it under its own `/run`, which is moved into the new root).
pub const PLAN_FILE_IN_TARGET: &str = "/run/carte/plan.json";

/// The path (below `carte.server`) where a machine GETs its plan. The per-boot token goes in
/// an `Authorization: Bearer` header, never in the path.
pub fn plan_path(mac: &str) -> String {
    format!("/api/v1/machines/{mac}/plan")
}

/// The path (below `carte.server`) where a machine POSTs its [`crate::Event`]s, with the
/// plan's token as `Authorization: Bearer`.
pub fn events_path(mac: &str) -> String {
    format!("/api/v1/machines/{mac}/events")
}

/// The path (below `carte.server`) where a machine PUTs the tar of its machine layer when
/// its plan asks for a sync-back, with the plan's token as `Authorization: Bearer`.
pub fn sync_machine_path(mac: &str) -> String {
    format!("/api/v1/machines/{mac}/sync/machine")
}

/// The path (below `carte.server`) where a machine PUTs the tar of a writable layer's upper
/// (its changes) when its plan asks for that layer's sync-back, with the plan's token as
/// `Authorization: Bearer`. `name` is an image name (`a-z 0-9 . _ -`), safe in a path.
pub fn sync_layer_path(mac: &str, name: &str) -> String {
    format!("/api/v1/machines/{mac}/sync/layer/{name}")
}

/// A layer name as one file or folder name: ASCII letters, digits, `.`, `_` and `-` kept,
/// anything else `_`. carte-init's compose and sync-back, and carte-shim, name a layer's
/// folders and files with it, so they agree on where each layer's upper lives.
pub fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_embed_the_mac() {
        assert_eq!(
            plan_path("52:54:00:00:00:01"),
            "/api/v1/machines/52:54:00:00:00:01/plan"
        );
        assert_eq!(
            events_path("52:54:00:00:00:01"),
            "/api/v1/machines/52:54:00:00:00:01/events"
        );
        assert_eq!(
            sync_machine_path("52:54:00:00:00:01"),
            "/api/v1/machines/52:54:00:00:00:01/sync/machine"
        );
        assert_eq!(
            sync_layer_path("52:54:00:00:00:01", "alice-home"),
            "/api/v1/machines/52:54:00:00:00:01/sync/layer/alice-home"
        );
    }

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(file_name("debian-12.4_x"), "debian-12.4_x");
        assert_eq!(file_name("a/b c@1"), "a_b_c_1");
    }
}
