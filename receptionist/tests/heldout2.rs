//! The second held-out set (`tests/data/heldout2.tsv`), written after the first had been tuned
//! against, measured by the shared harness (`heldout_harness`).

mod heldout_harness;

#[tokio::test]
async fn the_second_held_out_set_is_measured() {
    heldout_harness::measure("heldout2.tsv", "held-out set 2").await;
}
