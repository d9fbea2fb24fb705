//! Who may do what to an image: the kind contracts as pure functions over the caller, the
//! image and (for project images) its project. Table-tested; no IO.
//!
//! Rules (DESIGN.md §4): kernel and system images are readable by every token; system and
//! machine images are created and versioned only by admins; user and temporary images are
//! read and written only by their owner, admins read them; project images are read and
//! written by the project's members. Admins may delete any image (clean-up is their job)
//! but never write a user's data.

use crate::model::{Image, ImageKind, NewImage, Project, Role};

/// The caller, as its token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    pub fn new(name: &str, role: Role) -> Principal {
        Principal {
            name: name.to_string(),
            role,
        }
    }

    /// The operator at the data folder itself (the CLI with `--data`): filesystem
    /// permissions already decided that they are in charge.
    pub fn local_admin() -> Principal {
        Principal::new("admin", Role::Admin)
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Owner of every machine image.
pub const SYSTEM_OWNER: &str = "system";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// See the image, its versions, download artefacts.
    Read,
    /// Upload blobs and record versions.
    Write,
    Delete,
}

fn member(who: &Principal, project: Option<&Project>) -> bool {
    project.is_some_and(|p| p.members.contains(&who.name))
}

/// Whether `who` may `access` `image`; `project` is the image's project, if any.
pub fn allowed(who: &Principal, image: &Image, project: Option<&Project>, access: Access) -> bool {
    let owner = image.owner == who.name;
    let admin = who.is_admin();
    match (image.kind, access) {
        (_, Access::Delete) if admin => true,
        (ImageKind::Kernel | ImageKind::System, Access::Read) => true,
        (ImageKind::Kernel, _) => owner,
        (ImageKind::System | ImageKind::Machine, _) => admin,
        (ImageKind::User | ImageKind::Temporary, Access::Read) => owner || admin,
        (ImageKind::User | ImageKind::Temporary, _) => owner,
        (ImageKind::Project, Access::Read) => admin || member(who, project),
        (ImageKind::Project, Access::Write) => member(who, project),
        (ImageKind::Project, Access::Delete) => {
            owner || project.is_some_and(|p| p.owner == who.name)
        }
    }
}

/// Whom a machine's sync-back of a writable layer of `image` writes as: the image's owner
/// (with no admin role), since the changes are that owner's data coming back from a
/// machine their setup mounted it on; `None` for kinds that are never writable on a
/// machine (kernel, system, machine — the machine layer has its own route) and for a
/// project image whose owner is no longer a member. The caller (netbootd) has checked
/// that the machine's current plan mounts this image writable and asks for its changes.
pub fn sync_writer(image: &Image, project: Option<&Project>) -> Option<Principal> {
    let owner = Principal::new(&image.owner, Role::User);
    match image.kind {
        ImageKind::User | ImageKind::Temporary => Some(owner),
        ImageKind::Project => member(&owner, project).then_some(owner),
        ImageKind::Kernel | ImageKind::System | ImageKind::Machine => None,
    }
}

/// Why `who` may not create `new`, or `None` when they may. `project` is the project
/// `new.project` names, if it exists.
pub fn create_denied(who: &Principal, new: &NewImage, project: Option<&Project>) -> Option<String> {
    match new.kind {
        ImageKind::System | ImageKind::Machine if !who.is_admin() => Some(format!(
            "only admins may create {} images",
            new.kind.as_str()
        )),
        ImageKind::Project if !(who.is_admin() || member(who, project)) => Some(format!(
            "only members of project {} may create its images",
            new.project.as_deref().unwrap_or("?")
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Access::*;
    use ImageKind::*;

    fn check(kind: ImageKind, who: &str, expected: [bool; 3]) {
        let image = Image {
            name: "i".into(),
            kind,
            owner: "owner".into(),
            project: (kind == Project).then(|| "p".into()),
            expires_at: None,
            created_at: 0,
        };
        let project = crate::model::Project {
            name: "p".into(),
            owner: "lead".into(),
            members: vec!["lead".into(), "member".into(), "owner".into()],
        };
        let principal = match who {
            "admin" => Principal::new("root", Role::Admin),
            name => Principal::new(name, Role::User),
        };
        let got = [Read, Write, Delete].map(|a| allowed(&principal, &image, Some(&project), a));
        assert_eq!(got, expected, "{kind} by {who}: [read, write, delete]");
    }

    #[test]
    fn kind_contracts() {
        let all = [true, true, true];
        let none = [false, false, false];
        let read = [true, false, false];
        let admin_rd = [true, false, true];
        check(Kernel, "owner", all);
        check(Kernel, "stranger", read);
        check(Kernel, "admin", admin_rd);
        check(System, "owner", read);
        check(System, "stranger", read);
        check(System, "admin", all);
        check(User, "owner", all);
        check(User, "stranger", none);
        check(User, "admin", admin_rd);
        check(Temporary, "owner", all);
        check(Temporary, "stranger", none);
        check(Temporary, "admin", admin_rd);
        check(Machine, "owner", none);
        check(Machine, "admin", all);
        check(Project, "owner", all);
        check(Project, "member", [true, true, false]);
        check(Project, "lead", all);
        check(Project, "stranger", none);
        check(Project, "admin", admin_rd);
    }

    #[test]
    fn sync_back_writes_as_the_owner_of_writable_kinds_only() {
        let image = |kind| Image {
            name: "i".into(),
            kind,
            owner: "alice".into(),
            project: (kind == Project).then(|| "p".into()),
            expires_at: None,
            created_at: 0,
        };
        let project = |members: &[&str]| crate::model::Project {
            name: "p".into(),
            owner: "lead".into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        };
        let alice = Principal::new("alice", Role::User);
        assert_eq!(sync_writer(&image(User), None), Some(alice.clone()));
        assert_eq!(sync_writer(&image(Temporary), None), Some(alice.clone()));
        let with_alice = project(&["lead", "alice"]);
        assert_eq!(
            sync_writer(&image(Project), Some(&with_alice)),
            Some(alice.clone())
        );
        assert_eq!(
            sync_writer(&image(Project), Some(&project(&["lead"]))),
            None
        );
        for kind in [Kernel, System, Machine] {
            assert_eq!(sync_writer(&image(kind), None), None, "{kind}");
        }
        // What it returns may write exactly what the kind contract lets the owner write.
        let w = sync_writer(&image(User), None).expect("writer");
        assert!(!w.is_admin());
        assert!(allowed(&w, &image(User), None, Write));
    }

    #[test]
    fn creation() {
        let user = Principal::new("u", Role::User);
        let admin = Principal::new("a", Role::Admin);
        let new = |kind| NewImage {
            name: "n".into(),
            kind,
            project: Some("p".into()),
            expires_at: None,
        };
        let project = crate::model::Project {
            name: "p".into(),
            owner: "x".into(),
            members: vec!["x".into()],
        };
        for kind in [System, Machine] {
            assert!(create_denied(&user, &new(kind), None).is_some(), "{kind}");
            assert!(create_denied(&admin, &new(kind), None).is_none(), "{kind}");
        }
        for kind in [Kernel, User, Temporary] {
            assert!(create_denied(&user, &new(kind), None).is_none(), "{kind}");
        }
        assert!(create_denied(&user, &new(Project), Some(&project)).is_some());
        let x = Principal::new("x", Role::User);
        assert!(create_denied(&x, &new(Project), Some(&project)).is_none());
    }
}
