using OnnxAlign.Core;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>What the SMC samplers share: a system's starting particles and its resampling step.</summary>
internal static class SmcParticles
{
    /// <summary>Particle b of system s draws x_T (and later its noise) from stream (seed, s·n + b); the system's resampling uniforms come from stream (seed, −2 − s).</summary>
    public static (float[] X, NoiseStream[] Streams, NoiseStream Resampler) Start(long seed, int system, int n, int d)
    {
        var x = new float[n * d];
        var streams = new NoiseStream[n];
        for (int b = 0; b < n; b++)
        {
            streams[b] = new NoiseStream(seed, (long)system * n + b);
            streams[b].NextGaussian(x.AsSpan(b * d, d));
        }
        return (x, streams, new NoiseStream(seed, -2 - (long)system));
    }

    /// <summary>
    /// Systematic resampling of a system: returns log mean(e^ℓ) (the stage's factor of Ẑ) and each row's ancestor,
    /// permutes the rows of <paramref name="buffers"/>, gives every copy its own noise stream split from its ancestor's
    /// by (<paramref name="key"/>, row), and resets the log weights.
    /// </summary>
    public static (double LogMeanWeight, int[] Ancestors) Resample(double[] logWeights, NoiseStream resampler, NoiseStream[] streams, long key, int d,
                                                                  params float[][] buffers)
    {
        int n = logWeights.Length;
        double logMean = WeightedSamples.LogMeanExp(logWeights).Value;
        var ancestors = WeightedSamples.Systematic(WeightedSamples.Normalize(logWeights), n, resampler.NextDouble());
        foreach (var buffer in buffers)
        {
            var copy = (float[])buffer.Clone();
            for (int b = 0; b < n; b++) Array.Copy(copy, ancestors[b] * d, buffer, b * d, d);
        }
        var split = new NoiseStream[n];
        for (int b = 0; b < n; b++) split[b] = streams[ancestors[b]].Split((key << 20) + b);
        split.CopyTo(streams, 0);
        Array.Clear(logWeights);
        return (logMean, ancestors);
    }
}
