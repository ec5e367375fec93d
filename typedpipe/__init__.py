"""typedpipe"""
