"""Placeholder until its dashboard library lands."""
import streamlit as st

st.title("model_data")
st.info("This screen is being built.")
