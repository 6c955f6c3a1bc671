"""A tiny app that echoes the canvas JSON (like streamlit-drawable-canvas's own e2e tests).

Used to capture the real Fabric JSON shapes the component emits (tests/fixtures/fabric/).
Query string: ?mode=polygon|freedraw|rect|point&size=<canvas px>&name=<capture name>.
With CANVAS_ECHO_DIR set, the rendered drawing is saved there as <name>.png: the ground truth
the geometry tests compare against.
"""
import json
import os
from pathlib import Path

import streamlit as st
from PIL import Image
from streamlit_drawable_canvas import st_canvas

mode = st.query_params.get("mode", "polygon")
size = int(st.query_params.get("size", "448"))
name = st.query_params.get("name", "echo")
bg = Image.new("L", (224, 224), 60)
res = st_canvas(fill_color="#ff0000", stroke_width=2, stroke_color="#ff0000",
                background_image=bg, height=size, width=size, drawing_mode=mode, key="echo",
                return_image_data=True)
out_dir = os.environ.get("CANVAS_ECHO_DIR")
if out_dir and res.json_data and res.json_data.get("objects"):
    Image.fromarray(res.image_data).save(Path(out_dir) / f"{name}.png")
st.code(json.dumps({"json": res.json_data, "fit": res.background_fit}), language="json")
