"""Real browser: Debian Chromium driven by Playwright against a running app."""

from tests.browser import browser_page, select_option, streamlit_server


def test_home_selects_video_and_renders_prediction(tmp_path):
    with streamlit_server() as url, browser_page() as page:
        page.goto(url)
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
        select_option(page, "Motion class", "zoom_out")
        true_metric = page.locator('[data-testid="stMetric"]').filter(has_text="True class")
        true_metric.filter(has_text="zoom_out").wait_for()
        chart = page.locator('[data-testid="stPlotlyChart"]').first
        chart.wait_for()
        # plotly drew the bars: one per class
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .bars .point').length >= 8")
        assert page.locator('[data-testid="stVideo"]').count() >= 1
        page.screenshot(path=str(tmp_path / "home.png"), full_page=True)
        assert (tmp_path / "home.png").stat().st_size > 10_000


def test_flow_page_renders_magnitude_and_direction(tmp_path):
    with streamlit_server() as url, browser_page() as page:
        page.goto(url + "/flow")
        # per method: arrows, magnitude, direction; then the two comparisons, animation, histogram
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=\"stPlotlyChart\"]').length >= 10")
        assert page.get_by_text("magnitude (px)").first.is_visible()
        assert page.locator(".gtitle").filter(has_text="direction").count() >= 2
        # the magnitude heatmaps have a colour bar
        assert page.locator(".colorbar").count() >= 2
        page.screenshot(path=str(tmp_path / "flow.png"), full_page=True)
