using OnnxAlign.Jobs;
using OnnxAlign.Model;

namespace OnnxAlign.Tests;

/// <summary>The run plan's canonical JSON is the resume fingerprint (issue #16): order-free, and it changes with anything that changes the samples.</summary>
public sealed class RunPlanTests
{
    [Fact]
    public void TheCanonicalJsonIgnoresOrderAndSeesEveryValue()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("tiny-unet"));
        var a = RunPlan.For("generate", model, new Dictionary<string, string?> { ["count"] = "48", ["seed"] = "3", ["shard"] = null });
        var b = RunPlan.For("generate", model, new Dictionary<string, string?> { ["shard"] = null, ["seed"] = "3", ["count"] = "48" });
        var c = RunPlan.For("generate", model, new Dictionary<string, string?> { ["count"] = "48", ["seed"] = "4", ["shard"] = null });
        Assert.Equal(a.ToCanonicalJson(), b.ToCanonicalJson());
        Assert.NotEqual(a.ToCanonicalJson(), c.ToCanonicalJson());
        Assert.Contains(Path.GetFullPath(model.Directory), System.Text.Json.JsonDocument.Parse(a.ToCanonicalJson()).RootElement.GetProperty("model").GetString());
        Assert.EndsWith("\n", a.ToCanonicalJson());
    }
}
