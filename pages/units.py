"""Placeholder until its dashboard library lands."""
import streamlit as st

st.title("units")
st.info("This screen is being built.")
