"""wire wrappers"""
