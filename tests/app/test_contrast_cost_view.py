""""Why not the right one?": the announced cost counts every pass (faithfulness included) and each pair map is
shown with its faithfulness estimate (issue 14)."""

from __future__ import annotations

from tests.app.test_app import app, first_neighbour, image_captions, run, store, texts

QUERY = "red/red1.png"


def test_the_announced_cost_is_the_views_whole_cost_and_the_maps_carry_their_faithfulness(indexes):
    from simx.explain.contrast import estimate_why_not
    from simx.index import open_index

    wrong = first_neighbour(indexes)
    store(indexes).put("tiny", QUERY, wrong, "bad", user="ann")
    at = run(app(index="tiny", query=QUERY, neighbour=wrong))
    at.selectbox(key="contrast_method_explore").set_value("sbsm")
    run(at)
    caption = next(c for c in texts(at.caption).split("\n") if "forward passes" in c)
    index = open_index("tiny", root=indexes)
    bound = estimate_why_not(index.model, "sbsm", j=1)  # nothing cached counted: at least what the view announces
    announced = int(caption.split("at most ")[1].split(" forward")[0].replace(",", ""))
    scoring = int(caption.split(" of them score the maps")[0].rsplit("(", 1)[1].replace(",", ""))
    assert "faithfulness estimate" in caption and scoring == bound.faithfulness > 0
    # the same count but for the three unperturbed images, which the pair view may have cached already
    assert bound.forward - 3 <= announced <= bound.forward
    at.button(key="contrast_go_explore").click()
    run(at)
    assert any(c.startswith(f"wrong {wrong}: s = ") for c in image_captions(at)) and not at.error
    assert texts(at.caption).count("insertion") >= 2  # the wrong and the right neighbours' maps
