//! Shared by the end-to-end tests on the lab's real node (tests/e2e_*.rs):
//! finding the sendfleet image `make image` built. Never builds it here —
//! the test's network namespace has no route to the Debian mirror.

use std::path::PathBuf;
use std::process::Command;

/// The image archive for the current release binary: `SENDFLEET_IMAGE_ARCHIVE`
/// (set by `make test-e2e`) or `hack/build-image.sh --print`. Panics with
/// what to run when it is missing.
pub fn image_archive() -> PathBuf {
    if let Ok(p) = std::env::var("SENDFLEET_IMAGE_ARCHIVE") {
        if !p.is_empty() {
            assert!(std::path::Path::new(&p).is_file(), "SENDFLEET_IMAGE_ARCHIVE={p} does not exist: run `make image`");
            return p.into();
        }
    }
    let repo = sendfleet_lab::kit::repo_root();
    let out =
        Command::new(repo.join("hack/build-image.sh")).arg("--print").output().expect("running hack/build-image.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let path = text.lines().find_map(|l| l.strip_prefix("image=")).unwrap_or("").to_string();
    assert!(
        out.status.success() && !path.is_empty(),
        "the sendfleet image for the current target/release/sendfleet is not built: run `make image` \
         (needs the network for mmdebstrap, which this test's namespace does not have): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path.into()
}
