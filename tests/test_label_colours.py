"""The shared label palette: stable, distinct, independent of order."""

from arterys_http.label_colours import DISTINCT_COLOURS, label_colours, mask_labels


def test_the_same_labels_get_the_same_colours_in_any_order():
    labels = ["bone", "air", "Fat", "muscle"]
    assert label_colours(labels) == label_colours(reversed(labels)) == label_colours(labels + labels)


def test_colours_follow_sorted_names_and_never_repeat():
    colours = label_colours(["b", "a", "C"])
    assert colours == {"a": DISTINCT_COLOURS[0], "b": DISTINCT_COLOURS[1], "C": DISTINCT_COLOURS[2]}
    many = label_colours(f"class {k:03d}" for k in range(200))
    assert len(set(many.values())) == 200
    assert all(0 <= channel <= 255 for colour in many.values() for channel in colour)


def test_an_answer_s_mask_labels_are_part_labels_and_label_map_names():
    answer = {"parts": [
        {"label": "liver", "binary_type": "probability_mask", "binary_data_shape": {"width": 1, "height": 1}},
        {"label": "organs", "binary_type": "numeric_label_mask", "label_map": {"1": "bone", "2": "air"},
         "binary_data_shape": {"width": 1, "height": 1}},
        {"label": "report", "binary_type": "dicom"},
    ]}
    assert mask_labels(answer) == ["liver", "bone", "air"]
    assert mask_labels(answer["parts"]) == mask_labels(answer)
