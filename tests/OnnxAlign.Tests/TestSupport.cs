using OnnxAlign.Core;
using OnnxAlign.Evaluation;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>Paths and helpers shared by the tests.</summary>
internal static class TestSupport
{
    public static string RepositoryRoot { get; } = FindRoot();

    public static string Toy(string name) => Path.Combine(RepositoryRoot, "models", "toy", name);

    /// <summary>This test run's scratch folder, removed when the test process exits.</summary>
    private static readonly Lazy<string> RunDirectory = new(() =>
    {
        string dir = Path.Combine(Path.GetTempPath(), "onnxalign-tests", $"{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(dir, recursive: true); } catch (IOException) { } };
        return dir;
    });

    public static string TempDirectory()
    {
        string dir = Path.Combine(RunDirectory.Value, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Generates <paramref name="count"/> samples of a model with a sampler.</summary>
    public static float[] Generate(IDenoiser denoiser, Sampler sampler, int count, long seed = 1, int batch = 1000) =>
        Generation.Run(denoiser, sampler, new GenerationRequest { Count = count, BatchSize = batch, Seed = seed }).Samples;

    /// <summary>
    /// Equal to float rounding: ONNX Runtime's kernels and SIMD loop tails may round the last bit differently for
    /// different batch sizes, so "does not depend on the batch" means equal to a few ulps, not bit for bit.
    /// </summary>
    public static void AssertClose(float[] expected, float[] actual, double relative = 1e-5)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= relative * (1 + Math.Abs(expected[i])), $"index {i}: {actual[i]} vs {expected[i]}");
    }

    private static string FindRoot()
    {
        // Test binaries run outside the repository (tools/gpu/device_run.sh unpacks them elsewhere) name it here.
        if (Environment.GetEnvironmentVariable("ONNXALIGN_REPOSITORY_ROOT") is { Length: > 0 } given)
            return File.Exists(Path.Combine(given, "OnnxAlign.sln")) ? Path.GetFullPath(given)
                : throw new InvalidOperationException($"ONNXALIGN_REPOSITORY_ROOT={given} has no OnnxAlign.sln");
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "OnnxAlign.sln"))) return dir.FullName;
        throw new InvalidOperationException("repository root not found");
    }
}

/// <summary>
/// Checks of sample statistics against exact values with tolerances of z standard errors, the standard errors
/// estimated from the same samples.
/// </summary>
internal static class Moments
{
    /// <summary>z = 4.5: with the handful of statistics per test, a false alarm under the null is far below 1e-3.</summary>
    public const double Z = 4.5;

    public static void AssertMeanAndCovariance(float[] samples, int d, double[] mean, double[] covariance, string label, double z = Z)
    {
        AssertCoordinateMeans(samples, d, mean, label, z);
        int n = samples.Length / d;
        var m = Numerics.ColumnMeans(samples, d);
        var c = Numerics.ColumnCovariance(samples, d);
        for (int i = 0; i < d; i++)
            for (int j = i; j < d; j++)
            {
                // SE of a sample covariance: sd of (x_i − m_i)(x_j − m_j) over √n.
                double s = 0, s2 = 0;
                for (int r = 0; r < n; r++)
                {
                    double p = (samples[r * d + i] - m[i]) * (samples[r * d + j] - m[j]);
                    s += p; s2 += p * p;
                }
                double se = Math.Sqrt((s2 / n - (s / n) * (s / n)) / n);
                Assert.True(Math.Abs(c[i * d + j] - covariance[i * d + j]) <= z * se,
                    $"{label}: cov[{i},{j}] = {c[i * d + j]:F4}, expected {covariance[i * d + j]:F4} ± {z * se:F4}");
            }
    }

    /// <summary>Per-coordinate means of high-dimensional samples, with a wider z for the many statistics (Bonferroni at 1e-3 overall for 64).</summary>
    public static void AssertCoordinateMeans(float[] samples, int d, double[] mean, string label, double z = 5)
    {
        int n = samples.Length / d;
        var m = Numerics.ColumnMeans(samples, d);
        var v = Numerics.ColumnVariances(samples, d);
        for (int i = 0; i < d; i++)
        {
            double se = Math.Sqrt(v[i] / n);
            Assert.True(Math.Abs(m[i] - mean[i]) <= z * se, $"{label}: coordinate {i}: {m[i]:F4} vs {mean[i]:F4} ± {z * se:F4}");
        }
    }

    public static void AssertComponentWeights(float[] samples, GaussianMixture mixture, double[] weights, string label, double z = Z)
    {
        int d = mixture.Dimension, n = samples.Length / d;
        var counts = new int[mixture.Components];
        for (int r = 0; r < n; r++) counts[mixture.Classify(samples.AsSpan(r * d, d))]++;
        for (int k = 0; k < counts.Length; k++)
        {
            double p = weights[k], se = Math.Sqrt(Math.Max(p * (1 - p), 1.0 / n) / n), f = (double)counts[k] / n;
            Assert.True(Math.Abs(f - p) <= z * se, $"{label}: component {k} frequency {f:F4}, expected {p:F4} ± {z * se:F4}");
        }
    }
}
