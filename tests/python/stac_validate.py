"""Validates a static STAC catalog written by `tessera catalog stac-export`.

Usage: stac_validate.py CATALOG_JSON

The core STAC schemas (catalog, collection, item) are pystac's bundled copies, so the check
runs without a network. The projection and datacube extension schemas are not bundled and
cannot be fetched here: their fields are checked against the extensions' required shape
instead. Prints `items N` on success; raises on the first invalid document.
"""

import json
import sys

import pystac
from pystac.validation.local_validator import LocalValidator


def check_extensions(item: dict) -> None:
    props = item["properties"]
    for ext in item.get("stac_extensions", []):
        if "/projection/" in ext:
            assert "proj:code" in props, f"{item['id']}: projection without proj:code"
            code = props["proj:code"]
            assert code is None or (isinstance(code, str) and ":" in code), code
            if "proj:bbox" in props:
                assert len(props["proj:bbox"]) in (4, 6), props["proj:bbox"]
            if "proj:shape" in props:
                assert all(isinstance(v, int) and v >= 0 for v in props["proj:shape"])
        elif "/datacube/" in ext:
            dims = props["cube:dimensions"]
            assert dims, f"{item['id']}: datacube without dimensions"
            for name, d in dims.items():
                assert "type" in d, f"{name}: no type"
                if d["type"] == "spatial":
                    assert d["axis"] in ("x", "y", "z"), d
                    assert len(d["extent"]) == 2, d
                if d["type"] == "temporal":
                    assert len(d["extent"]) == 2, d
            for name, v in props.get("cube:variables", {}).items():
                assert isinstance(v["dimensions"], list) and v["type"] in ("data", "auxiliary")
                assert all(x in dims for x in v["dimensions"]), (name, v)
        else:
            raise AssertionError(f"unexpected extension {ext}")


def main() -> None:
    validator = LocalValidator()
    root = pystac.Catalog.from_file(sys.argv[1])
    version = pystac.get_stac_version()
    validator.catalog_validator(version).validate(root.to_dict(include_self_link=False))
    items = 0
    for collection in root.get_children():
        assert isinstance(collection, pystac.Collection), collection
        validator.collection_validator(version).validate(
            collection.to_dict(include_self_link=False)
        )
        for item in collection.get_items():
            d = item.to_dict(include_self_link=False)
            validator.item_validator(version).validate(d)
            check_extensions(d)
            assert item.collection_id == collection.id
            items += 1
    print("items", items)


if __name__ == "__main__":
    main()
