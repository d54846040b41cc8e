//! The first held-out set of caller phrasings (`tests/data/heldout.tsv`), measured by the
//! shared harness (`heldout_harness`): rate and misses printed, not asserted.

mod heldout_harness;

#[tokio::test]
async fn the_held_out_set_is_measured() {
    heldout_harness::measure("heldout.tsv", "held-out set").await;
}
