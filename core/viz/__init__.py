"""Pure visualisation helpers: plotly figures and numpy images, no streamlit."""

from core.viz.basic import frame_strip, prediction_bar

__all__ = ["frame_strip", "prediction_bar"]
