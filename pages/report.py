"""Placeholder until its dashboard library lands."""
import streamlit as st

st.title("report")
st.info("This screen is being built.")
